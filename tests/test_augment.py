"""The 11 support views: count, order, geometry, and masks that move with their images."""

from __future__ import annotations

import math

import torch

from clipmpcad.augment import NUM_VIEWS, VIEWS, expand_views, transform


def test_eleven_views_in_method_order() -> None:
    assert NUM_VIEWS == 11
    kinds = [k for k, _ in VIEWS]
    assert kinds.count("rotate") == 4 and kinds.count("translate") == 4 and kinds.count("flip") == 2
    angles = sorted(v for k, v in VIEWS if k == "rotate")
    assert angles == sorted([math.pi / 16, -math.pi / 16, math.pi / 8, -math.pi / 8])


def test_shapes_order_and_identity() -> None:
    images = torch.rand(2, 3, 32, 32)
    masks = (torch.rand(2, 1, 32, 32) > 0.7).float()
    views, vmasks = expand_views(images, masks)
    assert views.shape == (22, 3, 32, 32) and vmasks.shape == (22, 1, 32, 32)
    torch.testing.assert_close(views[0], images[0])
    torch.testing.assert_close(views[11], images[1])  # view-major per image
    assert set(vmasks.unique().tolist()) <= {0.0, 1.0}


def test_masks_stay_aligned_with_their_images() -> None:
    """A bright square and its mask land in the same place in every view."""
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, 20:36, 24:44] = 1.0
    mask = image[:, :1].clone()
    views, vmasks = expand_views(image, mask)
    for v in range(NUM_VIEWS):
        bright = views[v, 0] > 0.5
        overlap = (bright & (vmasks[v, 0] > 0)).sum() / (bright | (vmasks[v, 0] > 0)).sum()
        assert overlap > 0.95, f"view {v} ({VIEWS[v]}): IoU {overlap:.3f}"


def test_translation_moves_content_by_a_tenth() -> None:
    image = torch.zeros(1, 1, 40, 40)
    image[:, :, 18:22, 18:22] = 1.0
    moved = transform(image, "translate", (0.1, 0.1), mode="nearest")
    ys, xs = torch.nonzero(moved[0, 0] > 0.5, as_tuple=True)
    # 0.1 in normalised coordinates (span 2) is 0.05 of the side: 2 pixels of 40
    assert abs(xs.float().mean().item() - 21.5) < 0.6 and abs(ys.float().mean().item() - 21.5) < 0.6


def test_flips_are_exact() -> None:
    image = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(transform(image, "flip", -1), image.flip(-1))
    torch.testing.assert_close(transform(image, "flip", -2), image.flip(-2))
