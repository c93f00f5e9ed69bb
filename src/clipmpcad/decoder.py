"""M-Decoder: per-level text-aligned logits → upsampled anomaly maps and detection scores (METHOD §5).

With T = [t_normal, t_abnormal] (D × 2) and p the L2-normalised patch features of one level,
softmax over the two classes of 100·p·T is σ(Δ) with Δ = 100·p·(t_abnormal − t_normal). Bilinear
upsampling is linear, so upsampling the two logits and taking the softmax equals σ of the
upsampled Δ: one channel instead of two, the same map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE = 100.0  # CLIP's trained temperature, as MVFA and April-GAN use it


def patch_logits(med: torch.Tensor, prototypes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Δ logits of the patch tokens: med (B, 1+N, D), prototypes (D, 2), or (B, D, 2) when each
    sample has its own (training on several categories) → (B, h, w)."""
    p = F.normalize(med[:, 1:].float(), dim=-1)  # (B, N, D)
    direction = prototypes[..., 1] - prototypes[..., 0]  # (D,) or (B, D)
    if direction.ndim == 1:
        return (LOGIT_SCALE * p @ direction).view(-1, *grid)
    return (LOGIT_SCALE * torch.einsum("bnd,bd->bn", p, direction)).view(-1, *grid)


def upsample(grids: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=True) of (B, L, h, w) or (B, h, w) to size × size."""
    squeeze = grids.ndim == 3
    x = grids.unsqueeze(1) if squeeze else grids
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=True)
    return x.squeeze(1) if squeeze else x


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Maps at the model's input size to an image's own (H, W): (..., S, S) → (..., H, W) float32
    on the CPU, bilinear with half-pixel centres (align_corners=False, as images are resized)."""
    lead = maps.shape[:-2]
    x = maps.reshape(1, -1, *maps.shape[-2:]).float().cpu()
    out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).numpy()


def anomaly_probability(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Per-level zero-shot map: σ of the upsampled Δ logits, (B, L, h, w) → (B, L, S, S)."""
    return torch.sigmoid(upsample(logits, size))


def detection_scores(logits: torch.Tensor) -> torch.Tensor:
    """Per-level detection score: mean over patches of the abnormal probability, (B, L, h, w) → (B, L)."""
    return torch.sigmoid(logits).mean(dim=(-2, -1))


class MDecoder(nn.Module):
    """Level weights of the seg maps and det scores: equal and fixed (published) or learned."""

    def __init__(self, num_levels: int, learned: bool = False) -> None:
        super().__init__()
        self.num_levels = num_levels
        if learned:  # weights = L·softmax(α): starts equal, stays positive and sums to L
            self.seg_logits = nn.Parameter(torch.zeros(num_levels))
            self.det_logits = nn.Parameter(torch.zeros(num_levels))
        else:
            self.register_buffer("seg_logits", torch.zeros(num_levels))
            self.register_buffer("det_logits", torch.zeros(num_levels))

    def level_weights(self, branch: str) -> torch.Tensor:
        logits = self.seg_logits if branch == "seg" else self.det_logits
        return self.num_levels * torch.softmax(logits, dim=0)  # (L,)

    def combine(self, per_level: torch.Tensor, branch: str) -> torch.Tensor:
        """Weighted sum over the level axis 1: (B, L, ...) → (B, ...)."""
        w = self.level_weights(branch).to(per_level.dtype)
        return torch.einsum("bl...,l->b...", per_level, w)
