"""A trained ClipMPCAD with its memory bank and calibration: images in, anomaly maps and image
scores out (METHOD §6–§7). Building the bank and fitting the reference calibration live here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .decoder import anomaly_probability
from .errors import ConfigError
from .memory_bank import MemoryBank
from .model import ClipMPCAD
from .runtime import autocast
from .scoring import (
    BranchMaps,
    Calibration,
    RangeTracker,
    Scale,
    branch_maps,
    fuse,
    image_threshold,
    quantile_table,
    smooth,
    upper_quantile,
)
from .training import SupportSet


@dataclass
class Scores:
    """Results for a batch: fused map (B, S, S), image score (B,), and the unfused branches."""

    anomaly_map: torch.Tensor
    image_score: torch.Tensor
    branches: BranchMaps
    level_maps: torch.Tensor | None = None  # (B, L, S, S) zero-shot map of every level, on request


class Detector:
    """Scores images with a trained model, its bank and its calibration; pure tensors, no I/O."""

    def __init__(
        self,
        model: ClipMPCAD,
        calibration: Calibration | None,
        *,
        has_masks: bool,
        image_size: int,
        device: torch.device,
        score_sigma: float = 0.0,
        precision: str = "auto",
    ) -> None:
        self.model = model.to(device).eval()
        self.calibration = calibration
        self.has_masks = has_masks
        self.map_branch = "seg" if has_masks else "det"  # classification-only sets map their det branch
        self.image_size = image_size
        self.device = device
        self.precision = precision  # autocast of the backbone and adapters (runtime.compute_dtype)
        self.score_sigma = score_sigma  # Gaussian smoothing of the scored maps (eval.smooth_scores); 0: none

    @torch.no_grad()
    def branch_maps(self, images: torch.Tensor, exclude: torch.Tensor | None = None) -> BranchMaps:
        """Unfused branch maps of a batch; exclude (B,) scores each image without its bank rows."""
        return self._run(images, exclude)[0]

    def _run(
        self, images: torch.Tensor, exclude: torch.Tensor | None, with_levels: bool = False
    ) -> tuple[BranchMaps, torch.Tensor | None]:
        """Branch maps of a batch, and with_levels its per-level zero-shot maps (B, L, S, S)."""
        with autocast(self.device, self.precision):
            out = self.model(
                images.to(self.device, non_blocking=True),  # from pinned memory: no wait on the device
                exclude=None if exclude is None else exclude.to(self.device),
                branches=(self.map_branch,),
            )
        levels = anomaly_probability(out.zero_logits[self.map_branch], self.image_size) if with_levels else None
        maps = branch_maps(out, self.model.decoder, self.map_branch, self.image_size, levels)
        if self.score_sigma > 0:
            maps.zero_map = smooth(maps.zero_map, self.score_sigma)
            maps.few_map = None if maps.few_map is None else smooth(maps.few_map, self.score_sigma)
        return maps, levels

    @torch.no_grad()
    def score(self, images: torch.Tensor, *, with_levels: bool = False) -> Scores:
        """Fused maps and image scores of a batch (B, 3, S, S) under the stored calibration."""
        if self.calibration is None:
            raise RuntimeError("the detector has no calibration yet")
        maps, levels = self._run(images, None, with_levels)
        amap, image_score = fuse(maps, self.calibration.scales, self.has_masks)
        return Scores(amap, image_score, maps, levels)


@torch.no_grad()
def build_bank(
    model: ClipMPCAD,
    normals: SupportSet,
    branches: tuple[str, ...],
    device: torch.device,
    batch: int,
    precision: str = "auto",
) -> MemoryBank:
    """The bank of the normal support views (patches and CLS of every level) for `branches`.

    Rows are written into preallocated (V·(1+N), D) tensors batch by batch: peak memory is the
    bank itself, not the bank plus its pieces.
    """
    owners = loo_groups(normals.groups).to(device)
    tokens_per_view = 1 + model.grid[0] * model.grid[1]
    bank = MemoryBank.allocate(branches, len(model.levels), owners, tokens_per_view, model.prototypes.shape[0])
    for start in range(0, len(normals), batch):
        with autocast(device, precision):
            feats = model.features(normals.images[start : start + batch].to(device), last_branches=branches)
        for b in branches:
            for level, f in enumerate(feats.branch(b)):
                bank.write(b, level, start, f)
    return bank


def loo_groups(image_ids: torch.Tensor) -> torch.Tensor:
    """Bank owner ids for leave-one-out (METHOD §7): the support image, so that an image is scored
    without any of its views; with a single support image, the view itself."""
    if int(image_ids.unique().numel()) > 1:
        return image_ids
    return torch.arange(image_ids.numel())


def calibrate_on_reference(
    detector: Detector, normals: SupportSet, *, batch: int, image_fpr: float, pixel_fpr: float
) -> Calibration:
    """Fit branch normalisations and thresholds on normal support views scored leave-one-out."""
    tracker, collected = RangeTracker(), []
    owners = loo_groups(normals.groups)
    bank = detector.model.bank
    if bank is not None and owners.unique().numel() < 2:
        raise ConfigError(
            "leave-one-out calibration needs at least two normal support views; "
            "with one shot keep the 11 augmented views (train.views 11)"
        )
    if bank is not None and any(int(g.unique().numel()) < 2 for levels in bank.groups.values() for g in levels):
        raise ConfigError(  # a query would find only its own rows, all left out: an infinite score
            "the memory bank keeps rows of a single support image at some level, so leave-one-out "
            "calibration has nothing to compare with; raise bank.coreset (--coreset) or add shots"
        )
    for start in range(0, len(normals), batch):
        sl = slice(start, start + batch)
        exclude = owners[sl] if detector.model.bank is not None else None
        maps = detector.branch_maps(normals.images[sl], exclude)
        tracker.add(maps)
        collected.append(maps)
    scales = tracker.scales()
    fused = [fuse(maps, scales, detector.has_masks) for maps in collected]
    pixels = torch.cat([amap.flatten() for amap, _ in fused]).cpu().numpy()
    images = torch.cat([score for _, score in fused]).cpu().numpy()
    return Calibration(
        source="reference",
        scales=scales,
        image_threshold=image_threshold(images, image_fpr),
        pixel_threshold=upper_quantile(pixels, pixel_fpr),
        n_reference=int(np.unique(normals.groups.numpy()).size),
        reference_scores=tuple(float(s) for s in images),  # other FPR targets at predict time
        pixel_quantiles=quantile_table(pixels),
    )


def fixed_calibration(model: ClipMPCAD) -> Calibration:
    """Training-free zero-shot: no reference images, so each level-summed probability is divided by
    the number of levels (maps and scores in [0, 1]) and both thresholds sit at probability 0.5."""
    levels = float(len(model.levels))
    scales = {"zero_map": Scale(0.0, levels), "zero_det": Scale(0.0, levels)}
    return Calibration("fixed", scales, image_threshold=0.5, pixel_threshold=0.5, n_reference=0)
