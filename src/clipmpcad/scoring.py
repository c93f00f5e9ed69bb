"""From raw per-level grids to anomaly maps and image scores: branch normalisation, zero/few-shot
fusion, image score and decision thresholds (METHOD §5–§7).

`clean` fits each branch's normalisation on normal reference images (the support normals scored
leave-one-out); `paper` uses min-max over the whole test set (transductive, test-selected).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from .decoder import MDecoder, anomaly_probability, detection_scores, upsample
from .model import ModelOutput

STATISTICS = ("zero_map", "few_map", "zero_det", "few_det")


@dataclass
class BranchMaps:
    """Unnormalised branch outputs of a batch: maps (B, S, S), detection scores (B,)."""

    zero_map: torch.Tensor
    few_map: torch.Tensor | None
    zero_det: torch.Tensor
    few_det: torch.Tensor | None

    def statistic(self, name: str) -> torch.Tensor | None:
        return getattr(self, name)


def branch_maps(out: ModelOutput, decoder: MDecoder, map_branch: str, size: int) -> BranchMaps:
    """Sum the levels: zero-shot maps σ(upsampled Δ), few-shot maps of upsampled distances."""
    zero_map = decoder.combine(anomaly_probability(out.zero_logits[map_branch], size), map_branch)
    zero_det = decoder.combine(detection_scores(out.zero_logits["det"]), "det")
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

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) / max(self.hi - self.lo, 1e-12)


@dataclass(frozen=True)
class Calibration:
    """Branch normalisations and decision thresholds, fitted once and stored with the run."""

    source: str  # "reference" (normal support images) or "test" (paper protocol)
    scales: dict[str, Scale]  # per statistic in STATISTICS that exists for this run
    image_threshold: float  # image score above which an image is called anomalous
    pixel_threshold: float  # fused map value above which a pixel is anomalous
    n_reference: int  # images the calibration was fitted on

    def to_dict(self) -> dict:
        return {**asdict(self), "scales": {k: asdict(v) for k, v in self.scales.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        scales = {k: Scale(**v) for k, v in data["scales"].items()}
        return cls(data["source"], scales, data["image_threshold"], data["pixel_threshold"], data["n_reference"])


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
        return {name: Scale(self.lo[name], self.hi[name]) for name in self.lo}


def upper_quantile(values: np.ndarray, fpr: float) -> float:
    """A threshold t with at most a `fpr` fraction of `values` at or above it (decision: ≥ t)."""
    q = np.quantile(values.astype(np.float64), 1.0 - fpr, method="higher")
    return float(np.nextafter(q, np.inf))
