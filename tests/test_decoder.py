"""M-Decoder: σ of the upsampled Δ equals softmax of the upsampled logit pair; level weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipmpcad.decoder import MDecoder, anomaly_probability, detection_scores, patch_logits


def two_channel_reference(med: torch.Tensor, prototypes: torch.Tensor, grid, size: int) -> torch.Tensor:
    """METHOD §5 as written: 100·p@T → grid → upsample both logits → softmax → channel 1."""
    p = F.normalize(med[:, 1:], dim=-1)
    logits = (100.0 * p @ prototypes).transpose(1, 2).reshape(med.shape[0], 2, *grid)
    up = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
    return torch.softmax(up, dim=1)[:, 1]


def test_one_channel_map_equals_two_channel_softmax() -> None:
    med = torch.randn(3, 1 + 6 * 5, 16)
    prototypes = F.normalize(torch.randn(16, 2), dim=0)
    logits = patch_logits(med, prototypes, (6, 5))
    assert logits.shape == (3, 6, 5)
    got = anomaly_probability(logits.unsqueeze(1), 24)[:, 0]
    torch.testing.assert_close(got, two_channel_reference(med, prototypes, (6, 5), 24), rtol=1e-5, atol=1e-6)


def test_detection_score_is_mean_patch_probability() -> None:
    med = torch.randn(2, 1 + 9, 8)
    prototypes = F.normalize(torch.randn(8, 2), dim=0)
    logits = patch_logits(med, prototypes, (3, 3)).unsqueeze(1)
    p = F.normalize(med[:, 1:], dim=-1)
    expected = torch.softmax(100 * p @ prototypes, dim=-1)[..., 1].mean(dim=1)
    torch.testing.assert_close(detection_scores(logits)[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_equal_and_learned_level_weights() -> None:
    per_level = torch.rand(2, 4, 5, 5)
    equal = MDecoder(4)
    torch.testing.assert_close(equal.combine(per_level, "seg"), per_level.sum(dim=1))
    assert not any(p.requires_grad for p in equal.parameters())
    learned = MDecoder(4, learned=True)
    torch.testing.assert_close(learned.combine(per_level, "det"), per_level.sum(dim=1))  # starts equal
    with torch.no_grad():
        learned.seg_logits.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    w = learned.level_weights("seg").detach()
    assert abs(float(w.sum()) - 4.0) < 1e-5 and w[0] > 3.5


def test_per_sample_prototypes_equal_one_call_per_sample() -> None:
    med = torch.randn(3, 1 + 4, 8)
    protos = F.normalize(torch.randn(3, 8, 2), dim=1)
    together = patch_logits(med, protos, (2, 2))
    for i in range(3):
        torch.testing.assert_close(together[i], patch_logits(med[i : i + 1], protos[i], (2, 2))[0])
