"""The 11 support views of METHOD §8: the image, rotations by ±π/16 and ±π/8, translations by
(±0.1, ±0.1), a horizontal and a vertical flip; image and mask transformed alike.

Shapes: images (B, 3, S, S), masks (B, 1, S, S) → views (B·11, ...), view-major per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# (kind, value): rotation angle in radians, translation (dx, dy) in normalised coordinates, flip axis
VIEWS: tuple[tuple[str, object], ...] = (
    ("identity", None),
    ("rotate", math.pi / 16),
    ("rotate", -math.pi / 16),
    ("rotate", math.pi / 8),
    ("rotate", -math.pi / 8),
    ("translate", (0.1, 0.1)),
    ("translate", (0.1, -0.1)),
    ("translate", (-0.1, 0.1)),
    ("translate", (-0.1, -0.1)),
    ("flip", -1),  # horizontal: mirror the width axis
    ("flip", -2),  # vertical: mirror the height axis
)
NUM_VIEWS = len(VIEWS)


def _affine(kind: str, value: object) -> torch.Tensor:
    """The 2×3 matrix of affine_grid: output (x, y) samples input at A·(x, y, 1)."""
    if kind == "rotate":
        c, s = math.cos(value), math.sin(value)  # type: ignore[arg-type]
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0]])
    dx, dy = value  # type: ignore[misc]
    return torch.tensor([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])  # content moves by (+dx, +dy)


def transform(x: torch.Tensor, kind: str, value: object, mode: str = "bilinear") -> torch.Tensor:
    """One view of a batch (B, K, S, S): bilinear sampling with reflection padding, exact flips."""
    if kind == "identity":
        return x
    if kind == "flip":
        return torch.flip(x, dims=(value,))  # type: ignore[arg-type]
    theta = _affine(kind, value).to(x).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)


def expand_views(
    images: torch.Tensor, masks: torch.Tensor, views: int = NUM_VIEWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """All views of every image: (B,3,S,S), (B,1,S,S) → (B·V,3,S,S), (B·V,1,S,S); masks re-binarised at 0.5."""
    out_images, out_masks = [], []
    for kind, value in VIEWS[:views]:
        out_images.append(transform(images, kind, value))
        out_masks.append((transform(masks.float(), kind, value) > 0.5).float())
    stack = lambda xs: torch.stack(xs, dim=1).flatten(0, 1)  # noqa: E731  (B, V, ...) → (B·V, ...)
    return stack(out_images), stack(out_masks)
