"""The evaluation loop's batching: each batch keeps its own results when the next one is queued
before they are fetched; the test batch follows the device unless configured."""

from __future__ import annotations

import numpy as np
import torch

from clipmpcad.checkpoint import load_run
from clipmpcad.config import EvalConfig
from clipmpcad.data.dataset import Batch
from clipmpcad.evaluation import score_batches
from clipmpcad.experiment import train_run
from tinyrun import tiny_run_config


def test_score_batches_pairs_every_batch_with_its_own_results(synthetic_benchmark, tmp_path) -> None:
    s = next(s for s in synthetic_benchmark.sets if s.category == "SynthBrain")
    detector = load_run(
        train_run(tiny_run_config(s.dataset, s.root, s.category), tmp_path / "run", progress=False)
    ).detector
    loader = [
        Batch(torch.rand(n, 3, 64, 64), torch.zeros(n, 1, 64, 64), torch.zeros(n, dtype=torch.long), torch.arange(n))
        for n in (3, 1, 2)
    ]
    out = list(score_batches(detector, loader, with_maps=True))
    assert [batch for batch, _ in out] == loader  # in order, each batch once
    for batch, host in out:
        expected = detector.score(batch.images)
        np.testing.assert_allclose(host.maps, expected.anomaly_map.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(host.image_scores, expected.image_score.numpy(), rtol=1e-5, atol=1e-6)
    assert all(host.maps is None for _, host in score_batches(detector, loader, with_maps=False))


def test_the_test_batch_follows_the_device_unless_configured() -> None:
    assert EvalConfig().batch_for("cuda") > EvalConfig().batch_for("cpu")
    assert EvalConfig(batch_size=5).batch_for("cuda") == EvalConfig(batch_size=5).batch_for("cpu") == 5
