"""From raw per-level grids to anomaly maps and image scores: branch normalisation, zero/few-shot
fusion, image score and decision thresholds (METHOD §5–§7).

`clean` fits each branch's normalisation on normal reference images (the support normals scored
leave-one-out); `paper` uses min-max over the whole test set (transductive, test-selected).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from .decoder import MDecoder, anomaly_probability, detection_scores, upsample
from .errors import ConfigError
from .model import ModelOutput

STATISTICS = ("zero_map", "few_map", "zero_det", "few_det")
PIXEL_QUANTILES = 1001  # levels of the stored reference pixel-score table (steps of 0.001)


@dataclass
class BranchMaps:
    """Unnormalised branch outputs of a batch: maps (B, S, S), detection scores (B,)."""

    zero_map: torch.Tensor
    few_map: torch.Tensor | None
    zero_det: torch.Tensor | None  # only where the det branch was computed
    few_det: torch.Tensor | None

    def statistic(self, name: str) -> torch.Tensor | None:
        return getattr(self, name)


def branch_maps(
    out: ModelOutput, decoder: MDecoder, map_branch: str, size: int, zero_levels: torch.Tensor | None = None
) -> BranchMaps:
    """Sum the levels: zero-shot maps σ(upsampled Δ), few-shot maps of upsampled distances.

    zero_levels: the per-level zero-shot maps (B, L, S, S) of `map_branch` when the caller already has them.
    """
    if zero_levels is None:
        zero_levels = anomaly_probability(out.zero_logits[map_branch], size)
    zero_map = decoder.combine(zero_levels, map_branch)
    zero_det = decoder.combine(detection_scores(out.zero_logits["det"]), "det") if "det" in out.zero_logits else None
    few_map = few_det = None
    if map_branch in out.few_distances:  # bilinear upsampling is linear: sum the levels first
        few_map = upsample(out.few_distances[map_branch].sum(dim=1), size)
    if "det" in out.few_distances:
        det_map = few_map if map_branch == "det" else upsample(out.few_distances["det"].sum(dim=1), size)
        few_det = det_map.mean(dim=(-2, -1))
    return BranchMaps(zero_map, few_map, zero_det, few_det)


@dataclass(frozen=True)
class Scale:
    """Affine normalisation x → (x − lo) / (hi − lo) of one branch statistic."""

    lo: float
    hi: float

    @property
    def span(self) -> float:
        """hi − lo; 1 for a statistic that was constant where it was fitted: it is only shifted
        (dividing by a zero range would blow the branch up by 10¹² and drown the other one)."""
        return self.hi - self.lo if self.hi > self.lo else 1.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) / self.span


@dataclass(frozen=True)
class Calibration:
    """Branch normalisations and decision thresholds, fitted once and stored with the run."""

    source: str  # "reference" (normal support images) or "test" (paper protocol)
    scales: dict[str, Scale]  # per statistic in STATISTICS that exists for this run
    image_threshold: float  # image score above which an image is called anomalous
    pixel_threshold: float  # fused map value above which a pixel is anomalous
    n_reference: int  # images the calibration was fitted on
    reference_scores: tuple[float, ...] = ()  # image scores of the normal reference views (k·11)
    pixel_quantiles: tuple[float, ...] = ()  # reference pixel scores at levels i/(n−1), method "higher"

    def to_dict(self, tables: bool = True) -> dict:
        """JSON-ready fields; tables=False leaves out the two reference tables (for summaries)."""
        data = {**asdict(self), "scales": {k: asdict(v) for k, v in self.scales.items()}}
        if not tables:
            del data["reference_scores"], data["pixel_quantiles"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        scales = {k: Scale(**v) for k, v in data["scales"].items()}
        tables = (tuple(float(v) for v in data.get(key, ())) for key in ("reference_scores", "pixel_quantiles"))
        thresholds = data["image_threshold"], data["pixel_threshold"]
        if data["source"] == "reference":  # runs saved before just_above stepped in float64: step again
            thresholds = tuple(_restepped(t) for t in thresholds)
        return cls(data["source"], scales, *thresholds, data["n_reference"], *tables)

    def threshold_for(self, image_fpr: float) -> float:
        """The image threshold for another false-positive target on the reference scores (exact)."""
        _check_fpr(image_fpr, "image", self.source, bool(self.reference_scores))
        return image_threshold(np.asarray(self.reference_scores), image_fpr)

    def pixel_threshold_for(self, pixel_fpr: float) -> float:
        """The pixel threshold for another target, from the quantile table: exact where 1 − fpr is a
        table level (multiples of 0.001 with 1001 levels), else the next level up (fewer false positives)."""
        _check_fpr(pixel_fpr, "pixel", self.source, bool(self.pixel_quantiles))
        last = len(self.pixel_quantiles) - 1
        index = min(last, math.ceil((1.0 - pixel_fpr) * last - 1e-9))  # smallest level ≥ 1 − fpr
        if index == last and pixel_fpr * last < 1 - 1e-9:
            warnings.warn(
                f"the stored reference pixel quantiles cannot resolve a pixel false-positive target of "
                f"{100 * pixel_fpr:.3g}% (the finest is {100 / last:.3g}%): the pixel threshold is just above "
                "the highest reference pixel",
                stacklevel=3,
            )
        return just_above(self.pixel_quantiles[index])


def _check_fpr(fpr: float, what: str, source: str, has_table: bool) -> None:
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"the {what} false-positive target must be in (0, 1), got {fpr}")
    if not has_table:
        raise ConfigError(
            f"this calibration (source {source!r}) stores no normal reference {what} scores, so its threshold "
            "cannot be moved to another false-positive target; keep the run's own threshold"
        )


def quantile_table(values: np.ndarray, size: int = PIXEL_QUANTILES) -> tuple[float, ...]:
    """`values` at the levels i/(size − 1), i = 0..size − 1, by upper_quantile's "higher" rule."""
    levels = np.arange(size) / (size - 1)  # exact i/1000, so 1 − 0.01 hits level 990
    return tuple(float(q) for q in np.quantile(values.astype(np.float64), levels, method="higher"))


def fuse(maps: BranchMaps, scales: dict[str, Scale], has_masks: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused anomaly map (B, S, S) and image score (B,) (METHOD §7).

    Image score: max of the fused map for datasets with masks; otherwise the mean of the
    normalised zero-shot detection score and the normalised mean few-shot det map.
    """
    amap = scales["zero_map"].apply(maps.zero_map)
    if maps.few_map is not None:
        amap = 0.5 * amap + 0.5 * scales["few_map"].apply(maps.few_map)
    if has_masks:
        return amap, amap.flatten(1).amax(dim=1)
    score = scales["zero_det"].apply(maps.zero_det)
    if maps.few_det is not None:
        score = 0.5 * score + 0.5 * scales["few_det"].apply(maps.few_det)
    return amap, score


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of each map (B, S, S) with scipy's truncate=4; identity for sigma 0."""
    if sigma <= 0:
        return maps
    arr = maps.detach().cpu().numpy()
    out = np.stack([ndimage.gaussian_filter(m, sigma=sigma, mode="nearest") for m in arr])
    return torch.from_numpy(out).to(maps.device)


class RangeTracker:
    """Running min and max of every branch statistic over batches (for both calibrations)."""

    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}

    def add(self, maps: BranchMaps) -> None:
        for name in STATISTICS:
            value = maps.statistic(name)
            if value is None:
                continue
            lo, hi = float(value.min()), float(value.max())
            self.lo[name] = min(self.lo.get(name, lo), lo)
            self.hi[name] = max(self.hi.get(name, hi), hi)

    def scales(self) -> dict[str, Scale]:
        """The fitted scales; warns for a statistic that was constant (Scale.span)."""
        for name in self.lo:
            if self.hi[name] <= self.lo[name]:
                warnings.warn(
                    f"branch statistic {name} was constant ({self.lo[name]:.6g}) on every image it was "
                    "fitted on, so it is shifted but not scaled: more reference images would fix its range",
                    stacklevel=2,
                )
        return {name: Scale(self.lo[name], self.hi[name]) for name in self.lo}


def image_threshold(reference_scores: np.ndarray, fpr: float) -> float:
    """upper_quantile of the reference image scores, with a warning where they are too few to
    resolve `fpr` (the threshold then sits just above the highest of them)."""
    n = len(reference_scores)
    if n > 1 and fpr * (n - 1) < 1:  # upper_quantile then picks the highest score (method "higher")
        warnings.warn(
            f"{n} reference scores cannot resolve an image false-positive target of {fpr:.1%} (the finest is "
            f"{1 / (n - 1):.1%}): the image threshold is just above the highest reference score",
            stacklevel=3,
        )
    return upper_quantile(reference_scores, fpr)


def upper_quantile(values: np.ndarray, fpr: float) -> float:
    """A threshold t with at most a `fpr` fraction of `values` at or above it (decision: ≥ t)."""
    q = np.quantile(values.astype(np.float64), 1.0 - fpr, method="higher")
    return just_above(float(q))


def _restepped(threshold: float) -> float:
    """A reference threshold one float64 step above a float32 value (as runs saved before
    just_above have them: float32 comparisons round it back onto the value), stepped as just_above
    steps; any other threshold as it is."""
    below = float(np.float32(threshold))
    if below != threshold and float(np.nextafter(below, np.inf)) == threshold:
        return just_above(below)
    return threshold


def just_above(value: float) -> float:
    """The next number above `value`, one that stays above it where maps and scores are compared
    in float32 (NumPy and torch compare a float32 array with a Python float in float32, where a
    float64 step rounds back to `value` and the decision "≥ threshold" would take it in)."""
    single = np.float32(value)
    if float(single) == value:  # a float32 value, as every map and score is
        return float(np.nextafter(single, np.float32(np.inf)))
    return float(np.nextafter(value, np.inf))
