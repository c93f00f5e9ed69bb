"""Pixel scores streamed in batches, stored compactly and sorted once for the pixel metrics.

METHOD §11: pixel AUROC, AP and F1-max over all pixels of all test images, and AUPRO. A 2,000-image
test set at 240×240 is 115 M pixels, so each pixel is stored once, in the fewest bytes that keep
the metrics exact: an anomaly-free pixel as its float32 score (4 B), a ground-truth pixel as one
uint64 whose high half is the score as an order-preserving uint32 and whose low half is the id of
its ground-truth region (8 B). One in-place sort of each array then yields both the sorted scores
and, for AUPRO, each anomalous pixel's region weight in score order — no argsort, no float64 copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .aupro import aupro_from_sorted, label_regions
from .ranking import CHUNK, Curves, Ranking, curves_from_sorted, ranking_from_sorted

_SIGN = np.uint32(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)


def float32_to_key(scores: np.ndarray) -> np.ndarray:
    """float32 scores → uint32 keys in the same order (negative floats flipped, others sign-set)."""
    bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns −0.0 into +0.0
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def key_to_float32(keys: np.ndarray) -> np.ndarray:
    """Inverse of float32_to_key."""
    keys = keys.astype(np.uint32)
    return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).view(np.float32)


def _take_all(chunks: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate chunks into one array, releasing each chunk as it is copied (peak: total + 1)."""
    out = np.empty(sum(len(c) for c in chunks), dtype=dtype)
    at = 0
    while chunks:
        chunk = chunks.pop(0)
        out[at : at + len(chunk)] = chunk
        at += len(chunk)
    return out


@dataclass(frozen=True)
class PixelBatch:
    """One batch's pixels, prepared for a PixelStore: region ids still local to the batch (0..R−1)."""

    normal: np.ndarray  # (N0,) float32 scores of anomaly-free pixels
    keys: np.ndarray  # (N1,) uint64: key(score) << 32 | local region id
    sizes: np.ndarray  # (R,) int64 region sizes, in local id order


def prepare_pixels(maps: np.ndarray, masks: np.ndarray, regions: np.ndarray | None = None) -> PixelBatch:
    """The costly part of storing a batch, free of any store state, so batches can be prepared in
    parallel: (B,H,W) float32 finite scores and (B,H,W) bool ground truth.

    regions: (B,H,W) integer region ids that are > 0 exactly on `masks`, each id of an image one
    AUPRO region; None: the 8-connected regions of `masks`."""
    if regions is None:
        labels, sizes = label_regions(masks)  # (B,H,W) int32, (R,)
        region = (labels[masks] - 1).astype(np.uint64)  # local ids from 0
    else:
        region, sizes = _numbered_regions(regions, masks)
    keys = float32_to_key(maps[masks]).astype(np.uint64) << np.uint64(32)
    return PixelBatch(maps[~masks], keys | region, sizes)


def _numbered_regions(regions: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image region ids → (N1,) uint64 ids 0..R−1 of the ground-truth pixels across the batch
    (one id per region of each image) and the (R,) int64 region sizes."""
    image = np.nonzero(masks)[0].astype(np.int64)  # each ground-truth pixel's image, in masks' order
    ids = regions[masks].astype(np.int64) + image * (int(regions.max(initial=0)) + 1)
    unique, local = np.unique(ids, return_inverse=True)
    return local.astype(np.uint64), np.bincount(local, minlength=len(unique)).astype(np.int64)


class PixelStore:
    """All test pixels: anomaly-free scores and (score, region) keys of ground-truth pixels."""

    def __init__(self) -> None:
        self._normal: list[np.ndarray] = []  # float32 chunks of anomaly-free pixel scores
        self._anomalous: list[np.ndarray] = []  # uint64 chunks: key(score) << 32 | region id
        self._sizes: list[np.ndarray] = []  # int64 region sizes, in region-id order
        self._n_regions = 0
        self._sorted = True

    @property
    def n_pixels(self) -> int:
        return sum(len(c) for c in self._normal) + self.n_anomalous

    @property
    def n_anomalous(self) -> int:
        return sum(len(c) for c in self._anomalous)

    @property
    def n_regions(self) -> int:
        return self._n_regions

    def append(self, batch: PixelBatch) -> None:
        """Store a prepared batch after those already stored (its regions get the next global ids)."""
        if self._n_regions + len(batch.sizes) > int(_LOW32):
            raise DataError("more than 2**32 ground-truth regions: split the evaluation")
        self._normal.append(batch.normal)
        self._anomalous.append(batch.keys + np.uint64(self._n_regions))  # local → global ids, in the low half
        self._sizes.append(batch.sizes)
        self._n_regions += len(batch.sizes)
        self._sorted = False

    def _sorted_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Merge and sort both stores in place once; later calls reuse the result."""
        if not self._sorted:
            normal = _take_all(self._normal, np.float32)
            normal.sort()
            keys = _take_all(self._anomalous, np.uint64)
            keys.sort()
            self._normal, self._anomalous = [normal], [keys]
            self._sizes = [np.concatenate(self._sizes)] if self._sizes else []
            self._sorted = True
        normal = self._normal[0] if self._normal else np.empty(0, np.float32)
        keys = self._anomalous[0] if self._anomalous else np.empty(0, np.uint64)
        return normal, keys

    def _anomalous_scores(self, keys: np.ndarray) -> np.ndarray:
        """(N1,) uint64 sorted keys → (N1,) float32 ascending scores, in chunks."""
        scores = np.empty(len(keys), dtype=np.float32)
        for start in range(0, len(keys), CHUNK):
            high = keys[start : start + CHUNK] >> np.uint64(32)
            scores[start : start + CHUNK] = key_to_float32(high)
        return scores

    def _weight_cumsum(self, keys: np.ndarray) -> np.ndarray:
        """(N1+1,) running sum of 1 / region size over the sorted ground-truth pixels."""
        inverse_size = 1.0 / self._sizes[0] if self._sizes else np.empty(0)
        out = np.empty(len(keys) + 1, dtype=np.float64)
        out[0] = 0.0
        for start in range(0, len(keys), CHUNK):
            weights = inverse_size[(keys[start : start + CHUNK] & _LOW32).astype(np.int64)]
            out[start + 1 : start + 1 + len(weights)] = out[start] + np.cumsum(weights)
        return out

    def compute(self, fpr_limit: float) -> tuple[Ranking, float | None]:
        """Pixel AUROC, AP and F1-max, and AUPRO up to `fpr_limit`."""
        normal, keys = self._sorted_arrays()
        anomalous = self._anomalous_scores(keys)
        ranking = ranking_from_sorted(normal, anomalous)
        cumsum = self._weight_cumsum(keys)
        aupro = aupro_from_sorted(normal, anomalous, cumsum, self._n_regions, fpr_limit)
        return ranking, aupro

    def curves(self, max_points: int) -> Curves | None:
        """Pixel ROC and PR curves thinned to about `max_points` exact points, for plotting."""
        normal, keys = self._sorted_arrays()
        return curves_from_sorted(normal, self._anomalous_scores(keys), max_points)
