"""The evaluation loop's batching: each batch keeps its own results when the next one is queued
before they are fetched; the test batch follows the device unless configured; the maps kept for
the report are those of the images it draws, as scoring them again would give them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from clipmpcad.checkpoint import load_run
from clipmpcad.config import EvalConfig
from clipmpcad.data.dataset import Batch, mask_to_tensor
from clipmpcad.data.fewshot import evaluation_samples, read_shots
from clipmpcad.data.imageio import read_image
from clipmpcad.data.sample import ANOMALOUS, NORMAL, Sample
from clipmpcad.evaluation import WorstMaps, evaluate, score_batches
from clipmpcad.experiment import load_data, train_run
from clipmpcad.metrics import report_picks, wrongness
from clipmpcad.predict import Predictor
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


def test_worst_maps_keep_the_images_the_report_picks_across_batches() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, count = int(rng.integers(1, 30)), int(rng.integers(1, 8))
        scores = rng.choice([0.2, 0.4, 0.5, 0.6, 0.9], size=n)  # ties at every cut: the earlier image wins
        labels = rng.integers(0, 2, size=n)
        maps = rng.random((n, 4, 4))
        worst = WorstMaps(threshold=0.5, count=count)
        start = 0
        while start < n:
            size = int(rng.integers(1, 6))
            worst.add(start, scores[start : start + size], labels[start : start + size], maps[start : start + size])
            start += size
        wrong = wrongness(labels, scores, 0.5)
        expected = []  # of each label, its `count` worst; of equals, the earlier image
        for label in (0, 1):
            mine = [i for i in range(n) if labels[i] == label]
            expected += sorted(mine, key=lambda i: (-wrong[i], i))[:count]
        kept = worst.maps()
        assert sorted(kept) == sorted(expected), f"trial {trial}"
        assert set(report_picks(labels, wrong, count)) <= set(kept)  # whatever the report draws was kept
        for index, amap in kept.items():
            np.testing.assert_array_equal(amap, maps[index])


def test_the_report_shows_up_to_half_of_each_label_worst_first() -> None:
    labels = np.array([1] * 50 + [0] * 80)
    wrong = np.concatenate([np.linspace(0.9, 0.1, 50), np.linspace(-0.8, 0.05, 80)])  # 50 misses, 2 false alarms
    picks = report_picks(labels, wrong, 48)
    assert len(picks) == 48 and sum(labels[picks]) == 24  # the misses cannot crowd out the false alarms
    assert {128, 129} <= set(picks) and picks == sorted(picks, key=lambda i: (-wrong[i], i))
    few = report_picks(np.array([1, 1, 1, 1, 0]), np.array([0.4, 0.3, 0.2, 0.1, -0.5]), 4)
    assert few == [0, 1, 2, 4]  # one normal: the anomalies fill the rest, worst first
    assert report_picks(np.array([0, 1]), np.array([0.0, 0.0]), 5) == [0, 1]  # ties: the earlier first


def test_decision_counts_follow_score_at_or_above_the_threshold() -> None:
    from clipmpcad.metrics import decision_counts

    labels, scores = np.array([1, 1, 1, 0, 0, 0, 0]), np.array([0.2, 0.5, 0.9, 0.5, 0.49, 0.1, 0.7])
    assert decision_counts(labels, scores, 0.5) == {
        "image_threshold": 0.5,
        "anomalous": 3,
        "missed_anomalies": 1,  # 0.2; 0.5 itself is flagged
        "normal": 4,
        "false_alarms": 2,  # 0.5 and 0.7
    }


def test_kept_maps_are_what_scoring_the_images_again_draws(synthetic_benchmark, tmp_path) -> None:
    s = next(s for s in synthetic_benchmark.sets if s.category == "SynthBrain")
    run = load_run(train_run(tiny_run_config(s.dataset, s.root, s.category), tmp_path / "run", progress=False))
    data = load_data(run.config)
    samples = evaluation_samples(data, read_shots(run.run_dir / "shots.json", data))
    threshold, count = run.detector.calibration.image_threshold, len(samples) - 3  # several batches, most kept
    evaluation = dataclasses.replace(run.config.eval, batch_size=4)
    result = evaluate(run.detector, samples, run.prep, evaluation, progress=False, worst=WorstMaps(threshold, count))
    chosen = report_picks(result.labels, wrongness(result.labels, result.scores, threshold), count)
    assert set(chosen) <= set(result.worst_maps) and len(chosen) == count
    predictor = Predictor(run, None, None)
    for index, amap in result.worst_maps.items():
        path = samples[index].image
        image = read_image(path)
        kept = predictor.prediction(path.name, float(result.scores[index]), torch.from_numpy(amap), image.size)
        again = predictor.score_images([image], [path.name])[0]
        assert kept.anomaly_map.shape == again.anomaly_map.shape == image.size[::-1]
        np.testing.assert_allclose(kept.anomaly_map, again.anomaly_map, rtol=1e-5, atol=1e-5)
        assert kept.score == pytest.approx(again.score, abs=1e-5)
    # thin scratches on large images: at the model's size AUPRO counts each as the one region it
    # is at full size, not as the pieces the resize leaves of it
    scratch = np.zeros((512, 512), dtype=bool)
    for x in range(40, 470):
        scratch[60 + x // 3 : 64 + x // 3, x] = True  # 4 pixels thick
    Image.fromarray(scratch.astype(np.uint8) * 255).save(tmp_path / "scratch_mask.png")
    mine = []
    for i in range(3):
        Image.fromarray(np.full((512, 512, 3), 60 * i, np.uint8)).save(tmp_path / f"scratch{i}.png")
        mine.append(Sample(tmp_path / f"scratch{i}.png", ANOMALOUS if i else NORMAL, tmp_path / "scratch_mask.png"))
    mine[0] = Sample(mine[0].image, NORMAL)
    size = run.prep.image_size
    pieces = ndimage.label(mask_to_tensor(scratch, size)[0].numpy() > 0, structure=np.ones((3, 3)))[1]
    assert pieces > 2
    metrics = evaluate(run.detector, mine, run.prep, evaluation, progress=False).metrics
    assert metrics.n_regions == 2 and metrics.n_anomalous_pixels == 2 * (mask_to_tensor(scratch, size) > 0).sum()
