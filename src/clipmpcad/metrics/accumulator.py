"""The streaming accumulator the evaluation loop feeds, batch by batch, and the Metrics it returns.

METHOD §11. Image metrics use one score per image; pixel metrics use all pixels of all test images
at the resolution the maps arrive in (the model's input size, or each mask's original size when
maps come as a list of (H_i, W_i) arrays), which `Metrics.pixel_resolution` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import DataError
from .aupro import check_fpr_limit
from .pixels import PixelBatch, PixelStore, prepare_pixels
from .ranking import NO_RANKING, Curves, curves_from_sorted, ranking_from_sorted, split_sorted

ArrayOrList = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class Metrics:
    """Results of one test run. Ratios in [0, 1]; None where undefined (one class, no masks).

    F1 thresholds are chosen on the test set itself: report them as such, never as an operating
    point (LANDSCAPE "Metrics done right").
    """

    image_auroc: float | None
    image_ap: float | None
    image_f1_max: float | None
    image_f1_threshold: float | None
    pixel_auroc: float | None
    pixel_ap: float | None
    pixel_f1_max: float | None
    pixel_f1_threshold: float | None
    pixel_aupro: float | None
    fpr_limit: float  # AUPRO integration limit
    n_images: int
    n_normal: int
    n_anomalous: int
    n_pixels: int  # 0 without pixel metrics
    n_anomalous_pixels: int
    n_regions: int  # ground-truth regions (AUPRO): 8-connected, or as given to add(regions=)
    pixel_resolution: str | None  # "HxW" when all maps share one size, "mixed" otherwise

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain JSON-friendly dict (Python floats and ints, None for undefined)."""
        return asdict(self)


@dataclass(frozen=True)
class MetricsCurves:
    """Curves for the report: exact at image level, thinned for plotting at pixel level."""

    image: Curves | None
    pixel: Curves | None


def _as_image_batch(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"{name} must have shape (B,), got {values.shape}")
    return values


@dataclass(frozen=True)
class PreparedBatch:
    """A checked batch ready to be committed: float64 scores, uint8 labels, and its pixels with
    the (H, W) they were scored at (one entry per map size in the batch)."""

    scores: np.ndarray
    labels: np.ndarray
    pixels: list[tuple[PixelBatch, tuple[int, int]]]


def _prepare_same_size(
    maps: np.ndarray, masks: np.ndarray | None, b: int, regions: np.ndarray | None = None
) -> tuple[PixelBatch, tuple[int, int]]:
    """maps (B,H,W), masks (B,H,W) or None, regions (B,H,W) integer ids in place of masks or None."""
    if maps.ndim != 3 or len(maps) != b:
        raise DataError(f"maps must have shape (B={b},H,W) or be a list of {b} (H,W) maps, got {maps.shape}")
    truth_name, truth = ("regions", regions) if regions is not None else ("mask", masks)
    if truth is not None and truth.shape != maps.shape:
        raise DataError(
            f"{truth_name} shape {truth.shape} differs from map shape {maps.shape}: "
            "resize the maps to the masks (or the masks to the maps) before add()"
        )
    maps = maps.astype(np.float32, copy=False)
    if not np.isfinite(maps).all():
        raise DataError("anomaly maps contain NaN or infinity: check the model's output")
    if regions is not None:
        if not np.issubdtype(regions.dtype, np.integer) or regions.min(initial=0) < 0:
            raise DataError(f"regions must be non-negative integer ids (0 background), got {regions.dtype}")
        return prepare_pixels(maps, regions > 0, regions), maps.shape[1:]
    truth = np.zeros(maps.shape, dtype=bool) if masks is None else masks > 0.5
    return prepare_pixels(maps, truth), maps.shape[1:]


def _prepare_pixels(
    maps: ArrayOrList | None, masks: ArrayOrList | None, b: int, regions: np.ndarray | None = None
) -> list[tuple[PixelBatch, tuple[int, int]]]:
    """A batch's pixels ready to store: one prepared part per map size (a list of maps of any sizes)."""
    if maps is None:
        raise DataError("pixel_metrics=True but add() got no maps: pass (B,H,W) anomaly maps")
    if regions is not None and (masks is not None or isinstance(maps, list | tuple)):
        raise DataError("add() takes regions in place of masks, with one (B,H,W) array of maps")
    if not isinstance(maps, list | tuple):  # one (B,H,W) array (or CPU tensor)
        as_array = lambda a: None if a is None else np.asarray(a)  # noqa: E731
        return [_prepare_same_size(np.asarray(maps), as_array(masks), b, as_array(regions))]
    masks = [None] * len(maps) if masks is None else masks
    if len(maps) != b or len(masks) != b:
        raise DataError(f"a batch of {b} images came with {len(maps)} maps, {len(masks)} masks")
    out = []
    for amap, mask in zip(maps, masks, strict=True):
        one_mask = None if mask is None else np.asarray(mask)[None]  # (1,H,W)
        out.append(_prepare_same_size(np.asarray(amap)[None], one_mask, 1))
    return out


class MetricsAccumulator:
    """Collects image scores, labels and (optionally) pixel maps and masks; computes Metrics.

    Args:
        pixel_metrics: also compute pixel AUROC, AP, F1-max and AUPRO (add() then needs maps).
    """

    def __init__(self, pixel_metrics: bool) -> None:
        self.pixel_metrics = pixel_metrics
        self._scores: list[np.ndarray] = []  # float64 (B,) chunks
        self._labels: list[np.ndarray] = []  # uint8 (B,) chunks
        self._pixels = PixelStore()
        self._sizes: set[tuple[int, int]] = set()

    def add(
        self,
        image_scores: np.ndarray,
        labels: np.ndarray,
        maps: ArrayOrList | None = None,
        masks: ArrayOrList | None = None,
        regions: np.ndarray | None = None,
    ) -> None:
        """Add one batch.

        Args:
            image_scores: (B,) one score per image, higher = more anomalous.
            labels: (B,) 0 normal, 1 anomalous.
            maps: (B,H,W) anomaly maps, or a list of B (H_i,W_i) maps. Ignored when
                pixel_metrics is False; stored as float32.
            masks: (B,H,W) or a list of B (H_i,W_i) ground truth (> 0.5 is anomalous); None, for
                the batch or for one image, means no anomalous pixel there (normal images).
            regions: (B,H,W) integer ground truth in place of masks: 0 background, each id of an
                image one AUPRO region (e.g. regions labelled at the mask's original size and
                resized with it, so that resizing does not split them); None: masks' 8-connected
                regions.
        """
        self.commit(self.prepare(image_scores, labels, maps, masks, regions))

    def prepare(
        self,
        image_scores: np.ndarray,
        labels: np.ndarray,
        maps: ArrayOrList | None = None,
        masks: ArrayOrList | None = None,
        regions: np.ndarray | None = None,
    ) -> PreparedBatch:
        """add()'s checks and costly work, touching no state: batches may be prepared in parallel
        threads (numpy and scipy release the GIL there) and then committed in order."""
        scores = _as_image_batch(image_scores, "image_scores").astype(np.float64)
        labels = _as_image_batch(labels, "labels")
        if len(labels) != len(scores):
            raise DataError(f"{len(scores)} image scores but {len(labels)} labels in one batch")
        if not np.isfinite(scores).all():
            raise DataError("image scores contain NaN or infinity: check the model's output")
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"labels must be 0 (normal) or 1 (anomalous), got {np.unique(labels)}")
        pixels = _prepare_pixels(maps, masks, len(scores), regions) if self.pixel_metrics else []
        return PreparedBatch(scores, labels.astype(np.uint8), pixels)

    def commit(self, batch: PreparedBatch) -> None:
        """Store a prepared batch after those already stored."""
        for pixels, size in batch.pixels:
            self._pixels.append(pixels)
            self._sizes.add(size)
        self._scores.append(batch.scores)
        self._labels.append(batch.labels)

    def _image_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        scores = np.concatenate(self._scores) if self._scores else np.empty(0)
        labels = np.concatenate(self._labels) if self._labels else np.empty(0, np.uint8)
        return scores, labels

    @property
    def image_scores(self) -> np.ndarray:
        """(N,) float64 image scores in the order added (for plots and the report)."""
        return self._image_arrays()[0]

    @property
    def image_labels(self) -> np.ndarray:
        """(N,) uint8 labels in the order added."""
        return self._image_arrays()[1]

    def compute(self, fpr_limit: float = 0.3) -> Metrics:
        """All metrics over everything added so far; may be called again after more add()."""
        check_fpr_limit(fpr_limit)
        scores, labels = self._image_arrays()
        image = ranking_from_sorted(*split_sorted(scores, labels))
        pixel, aupro = self._pixels.compute(fpr_limit) if self.pixel_metrics else (NO_RANKING, None)
        n_anomalous = int(labels.sum())
        return Metrics(
            image_auroc=image.auroc,
            image_ap=image.ap,
            image_f1_max=image.f1_max,
            image_f1_threshold=image.f1_threshold,
            pixel_auroc=pixel.auroc,
            pixel_ap=pixel.ap,
            pixel_f1_max=pixel.f1_max,
            pixel_f1_threshold=pixel.f1_threshold,
            pixel_aupro=aupro,
            fpr_limit=fpr_limit,
            n_images=len(labels),
            n_normal=len(labels) - n_anomalous,
            n_anomalous=n_anomalous,
            n_pixels=self._pixels.n_pixels,
            n_anomalous_pixels=self._pixels.n_anomalous,
            n_regions=self._pixels.n_regions,
            pixel_resolution=self._resolution(),
        )

    def _resolution(self) -> str | None:
        if not self._sizes:
            return None
        if len(self._sizes) > 1:
            return "mixed"
        ((h, w),) = self._sizes
        return f"{h}x{w}"

    def curves(self, max_pixel_points: int = 4000) -> MetricsCurves:
        """Image curves at every distinct score; pixel curves thinned to ~max_pixel_points."""
        image = curves_from_sorted(*split_sorted(*self._image_arrays()))
        pixel = self._pixels.curves(max_pixel_points) if self.pixel_metrics else None
        return MetricsCurves(image=image, pixel=pixel)
