"""The wired model: batch independence, gradients only where they belong, zero-shot mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipmpcad.config import AdapterConfig, DecoderConfig
from clipmpcad.memory_bank import MemoryBank
from clipmpcad.model import ClipMPCAD


def build(backbone, kind: str = "madff", learned: bool = False) -> ClipMPCAD:
    prototypes = F.normalize(torch.randn(backbone.info.embed_dim, 2), dim=0)
    adapter = AdapterConfig(kind=kind) if kind else None
    return ClipMPCAD(backbone, prototypes, adapter, DecoderConfig("learned" if learned else "equal"))


@pytest.mark.parametrize("kind", ["madff", "linear"])
def test_a_sample_does_not_depend_on_its_batch(tiny_backbone, kind) -> None:
    model = build(tiny_backbone, kind).eval()
    images = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        model.bank = MemoryBank.from_features({"seg": feats.seg, "det": feats.det}, torch.arange(5))
        batch = model(images)
        for i in (0, 3):
            single = model(images[i : i + 1])
            for branch in ("seg", "det"):
                torch.testing.assert_close(
                    single.zero_logits[branch][0], batch.zero_logits[branch][i], rtol=1e-4, atol=1e-4
                )
                torch.testing.assert_close(
                    single.few_distances[branch][0], batch.few_distances[branch][i], rtol=1e-4, atol=1e-5
                )
    assert batch.zero_logits["seg"].shape == (5, 4, 8, 8)


def test_gradients_reach_adapters_and_never_the_backbone(tiny_backbone) -> None:
    model = build(tiny_backbone, learned=True)
    feats = model.features(torch.rand(2, 3, 64, 64))
    loss = sum(f.square().mean() for f in feats.seg + feats.det)
    loss = (
        loss
        + model.decoder.combine(torch.rand(2, 4), "seg").sum()
        + model.decoder.combine(torch.rand(2, 4), "det").sum()
    )
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    last = {id(a.phi2.weight) for a in (model.seg_adapters[-1], model.det_adapters[-1])}
    for branch in ("seg", "det"):
        params = model.branch_parameters(branch)
        assert params and all(p.grad is not None for p in params if id(p) not in last)
    # nothing reads the tokens after the last level, so its residual update is never computed
    assert all(model.backbone is not None and p.grad is None for p in model.parameters() if id(p) in last)
    # the first seg adapter also receives gradient from later levels through the re-injection
    assert model.seg_adapters[0].phi2.weight.grad.abs().sum() > 0


def test_prefix_path_equals_image_path(tiny_backbone) -> None:
    model = build(tiny_backbone).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a = model.features(images)
        b = model.features(prefix=model.prefix(images))
    for x, y in zip(a.seg + a.det, b.seg + b.det, strict=True):
        torch.testing.assert_close(x, y)


def test_zero_shot_model_uses_projected_tokens(tiny_backbone) -> None:
    model = build(tiny_backbone, kind="").eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        x = tiny_backbone.blocks(tiny_backbone.embed(images), 0, 4)
        torch.testing.assert_close(feats.seg[-1], tiny_backbone.project(x))
    assert model.branch_parameters("seg") == []
