"""The per-level training objective: focal + dice on the seg maps, BCE on the detection score
(METHOD §8). Every loss is returned per sample, shape (B,): the caller averages, so a step's loss
does not depend on how its samples are split into forward passes.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def focal_loss(prob: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of the 2-class map: prob (B, S, S) abnormal probability, mask (B, S, S) in {0,1} → (B,)."""
    p_true = torch.where(mask > 0.5, prob, 1.0 - prob).clamp(EPS, 1.0)  # probability of the true class
    per_pixel = -((1.0 - p_true) ** gamma) * torch.log(p_true)
    return per_pixel.flatten(1).mean(dim=1)


def dice_loss(prob: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss of the abnormal channel against the mask, per sample: (B, S, S) → (B,)."""
    inter = (prob * mask).flatten(1).sum(dim=1)
    total = prob.flatten(1).sum(dim=1) + mask.flatten(1).sum(dim=1)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def detection_loss(score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a detection probability (B,) against image labels (B,) → (B,).

    The published code fed probabilities to BCE-with-logits; these are probabilities, so BCE.
    """
    p = score.float().clamp(EPS, 1.0 - EPS)  # written out: autocast refuses F.binary_cross_entropy
    y = label.float()
    return -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p))
