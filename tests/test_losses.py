"""Losses against plain formulas; per-sample means make the scale independent of batch size."""

from __future__ import annotations

import math

import torch

from clipmpcad.losses import detection_loss, dice_loss, focal_loss


def test_focal_loss_plain_formula() -> None:
    prob = torch.tensor([[[0.9, 0.2]]])
    mask = torch.tensor([[[1.0, 0.0]]])
    expected = (-(0.1**2) * math.log(0.9) - (0.2**2) * math.log(0.8)) / 2
    assert abs(float(focal_loss(prob, mask)[0]) - expected) < 1e-6


def test_dice_loss_perfect_and_disjoint() -> None:
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1
    assert float(dice_loss(mask.clone(), mask)[0]) < 1e-6
    assert abs(float(dice_loss(1 - mask, mask)[0]) - (1 - 1 / 17)) < 1e-6


def test_losses_are_per_sample() -> None:
    prob = torch.rand(4, 8, 8)
    mask = (torch.rand(4, 8, 8) > 0.8).float()
    for fn in (focal_loss, dice_loss):
        whole = fn(prob, mask)
        parts = torch.cat([fn(prob[i : i + 1], mask[i : i + 1]) for i in range(4)])
        assert whole.shape == (4,)
        torch.testing.assert_close(whole, parts)


def test_detection_loss_is_bce_on_probabilities() -> None:
    score = torch.tensor([0.8, 0.3])
    label = torch.tensor([1.0, 0.0])
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert abs(float(detection_loss(score, label).mean()) - expected) < 1e-6
