"""AUPRO up to an FPR limit, by the official MVTec AD algorithm (Bergmann et al., IJCV 2021).

METHOD §11 and LANDSCAPE "Metrics done right": the ground truth of each image is cut into
8-connected regions; the PRO of a threshold is the mean over all regions of the fraction of the
region at or above it, each region weighted equally (a pixel weighs 1 / (region size · R)). The FPR
is counted over all anomaly-free pixels of all images, normal images included. The curve has one
point per distinct score (ties merged), starts at (0, 0), and is integrated with the trapezoid rule
up to `fpr_limit`, interpolating linearly at the limit, then divided by `fpr_limit`.

With scores sorted per class, the area reduces to a sum over normal pixels from the top: a normal
score s with tied count c widens the FPR by c / N0 while the PRO moves from PRO(> s) to PRO(≥ s),
so its trapezoid is c / N0 · ½ (PRO(> s) + PRO(≥ s)). Only the group straddling the limit is cut.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .ranking import CHUNK

# 8-connectivity within an image, none across the batch axis: (B,H,W) is labelled in one call
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut ground-truth masks into 8-connected regions.

    Args:
        masks: (B,H,W) bool, True on anomalous pixels.

    Returns:
        (B,H,W) int32 labels (0 background, 1..R regions, numbered across the batch) and the
        (R,) int64 region sizes in pixels.
    """
    labels, n_regions = ndimage.label(masks, structure=_STRUCTURE)
    # count over the anomalous pixels only: masks are sparse, and a pass over every pixel is the
    # most expensive step of streaming a batch
    sizes = np.bincount(labels[masks], minlength=n_regions + 1)[1:]
    return labels.astype(np.int32, copy=False), sizes.astype(np.int64)


def check_fpr_limit(fpr_limit: float) -> None:
    """Refuse an integration limit outside (0, 1]."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}; the MVTec default is 0.3")


def aupro_from_sorted(
    normal: np.ndarray,
    anomalous: np.ndarray,
    weight_cumsum: np.ndarray,
    n_regions: int,
    fpr_limit: float = 0.3,
) -> float | None:
    """Normalised area under the PRO curve up to `fpr_limit`.

    Args:
        normal: (N0,) ascending scores of anomaly-free pixels.
        anomalous: (N1,) ascending scores of ground-truth pixels.
        weight_cumsum: (N1+1,) float64; entry i is Σ_{j<i} 1 / size(region of anomalous[j]).
        n_regions: R, the number of ground-truth regions.
        fpr_limit: upper end of the FPR axis, in (0, 1].

    Returns:
        AUPRO in [0, 1], or None when there are no regions or no anomaly-free pixels.
    """
    check_fpr_limit(fpr_limit)
    n0 = len(normal)
    if n0 == 0 or n_regions == 0:
        return None
    total = weight_cumsum[-1]

    def pro(scores: np.ndarray, side: str) -> np.ndarray:  # PRO(≥ s): "left"; PRO(> s): "right"
        return (total - weight_cumsum[np.searchsorted(anomalous, scores, side=side)]) / n_regions

    budget = fpr_limit * n0  # normal pixels the integral may cover
    rank = int(np.floor(budget))  # the pixel of descending rank rank+1 lies in the cut group
    cut_value = None if rank >= n0 else normal[n0 - 1 - rank]
    first_full = 0 if cut_value is None else int(np.searchsorted(normal, cut_value, side="right"))
    area = 0.0  # in units of pixels × PRO; divided by N0 at the end
    for start in range(first_full, n0, CHUNK):
        s = normal[start : start + CHUNK]  # (c,) scores of groups wholly inside the limit
        area += 0.5 * float(np.sum(pro(s, "left") + pro(s, "right")))
    if cut_value is not None:
        key = np.asarray([cut_value])
        above = n0 - first_full  # FPR·N0 at PRO(> s)
        at_or_above = n0 - int(np.searchsorted(normal, cut_value, side="left"))
        y0, y1 = float(pro(key, "right")[0]), float(pro(key, "left")[0])
        width = budget - above  # part of the cut group's FPR step inside the limit
        y_limit = y0 + (y1 - y0) * width / (at_or_above - above)  # linear interpolation
        area += 0.5 * (y0 + y_limit) * width
    return area / n0 / fpr_limit
