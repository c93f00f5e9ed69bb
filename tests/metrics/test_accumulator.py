"""The streaming accumulator: same numbers whatever the batching, checked inputs, JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from clipmpcad.errors import DataError
from clipmpcad.metrics import Metrics, MetricsAccumulator


def make_test_set(seed: int = 0, b: int = 23, h: int = 16, w: int = 18):
    rng = np.random.default_rng(seed)
    labels = (rng.random(b) < 0.5).astype(int)
    labels[:2] = [0, 1]
    masks = np.zeros((b, h, w), dtype=bool)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        masks[i, y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
    maps = np.round(rng.random((b, h, w)) + 0.5 * masks, 2).astype(np.float32)  # with ties
    scores = maps.max(axis=(1, 2)) + 0.1 * rng.random(b)
    return scores, labels, maps, masks


def run(batch_sizes, data, pixel_metrics=True) -> Metrics:
    scores, labels, maps, masks = data
    accumulator = MetricsAccumulator(pixel_metrics=pixel_metrics)
    at = 0
    for size in batch_sizes:
        part = slice(at, at + size)
        accumulator.add(scores[part], labels[part], maps[part], masks[part])
        at += size
    assert at == len(scores)
    return accumulator.compute()


def test_pixel_and_image_metrics_match_sklearn():
    data = make_test_set()
    scores, labels, maps, masks = data
    metrics = run([len(scores)], data)
    assert metrics.image_auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.image_ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    expected_auroc = roc_auc_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_auroc == pytest.approx(expected_auroc, abs=1e-12)
    expected_ap = average_precision_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_ap == pytest.approx(expected_ap, abs=1e-12)
    n_anomalous = labels.sum()
    assert (metrics.n_images, metrics.n_anomalous) == (23, n_anomalous)
    assert metrics.n_normal == 23 - n_anomalous
    assert (metrics.n_pixels, metrics.n_anomalous_pixels) == (maps.size, masks.sum())
    assert metrics.pixel_resolution == "16x18"


def test_batching_does_not_change_any_number():
    data = make_test_set(seed=4)
    reference = run([23], data)
    for sizes in ([1] * 23, [5, 5, 5, 5, 3], [10, 1, 12], [2, 21]):
        assert run(sizes, data) == reference


def test_maps_at_each_masks_own_size_as_lists():
    rng = np.random.default_rng(2)
    sizes = [(10, 12), (7, 9), (15, 6), (10, 12)]
    maps = [rng.random(s).astype(np.float32) for s in sizes]
    masks = [None, np.zeros(sizes[1], bool), np.zeros(sizes[2], bool), np.zeros(sizes[3], bool)]
    masks[2][3:8, 1:4] = True
    masks[3][0:2, 0:3] = True
    for m, t in zip(maps, masks, strict=True):
        if t is not None:
            m[t] += 0.4
    accumulator = MetricsAccumulator(pixel_metrics=True)
    accumulator.add(np.array([0.1, 0.2]), np.array([0, 0]), maps[:2], masks[:2])
    accumulator.add(np.array([0.9, 0.8]), np.array([1, 1]), maps[2:], masks[2:])
    metrics = accumulator.compute()
    flat_maps = np.concatenate([m.ravel() for m in maps])
    truth = [np.zeros(m.shape, bool) if t is None else t for m, t in zip(maps, masks, strict=True)]
    flat_truth = np.concatenate([t.ravel() for t in truth])
    assert metrics.pixel_auroc == pytest.approx(roc_auc_score(flat_truth, flat_maps), abs=1e-12)
    assert metrics.n_pixels == flat_maps.size and metrics.pixel_resolution == "mixed"


def test_without_masks_pixel_metrics_are_none_and_compute_can_repeat():
    scores, labels, maps, _ = make_test_set()
    accumulator = MetricsAccumulator(pixel_metrics=False)
    accumulator.add(scores, labels, maps)
    metrics = accumulator.compute()
    assert metrics.pixel_auroc is None and metrics.pixel_aupro is None and metrics.n_pixels == 0
    assert accumulator.curves().pixel is None
    accumulator.add(scores[:3], labels[:3])
    assert accumulator.compute().n_images == len(scores) + 3


def test_only_normal_images_give_none_not_half():
    scores, _, maps, _ = make_test_set()
    accumulator = MetricsAccumulator(pixel_metrics=True)
    accumulator.add(scores, np.zeros(len(scores), int), maps, None)
    metrics = accumulator.compute()
    assert metrics.image_auroc is None and metrics.image_f1_max is None
    assert metrics.pixel_auroc is None and metrics.pixel_ap is None and metrics.pixel_aupro is None


def test_add_after_compute_is_counted():
    data = make_test_set(seed=9)
    scores, labels, maps, masks = data
    accumulator = MetricsAccumulator(pixel_metrics=True)
    accumulator.add(scores[:10], labels[:10], maps[:10], masks[:10])
    accumulator.compute()
    accumulator.add(scores[10:], labels[10:], maps[10:], masks[10:])
    assert accumulator.compute() == run([23], data)


def test_to_dict_is_json_and_curves_are_exposed():
    data = make_test_set()
    accumulator = MetricsAccumulator(pixel_metrics=True)
    accumulator.add(*data)
    as_dict = accumulator.compute().to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert set(as_dict) >= {"image_auroc", "pixel_aupro", "pixel_f1_threshold", "n_pixels"}
    curves = accumulator.curves(max_pixel_points=200)
    assert curves.image.exact and not curves.pixel.exact and len(curves.pixel.fpr) <= 202
    np.testing.assert_array_equal(accumulator.image_scores, data[0])
    np.testing.assert_array_equal(accumulator.image_labels, data[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, lab, m, t: (s, lab, m, t[:, :-1]), "mask shape"),
        (lambda s, lab, m, t: (s, lab, np.where(t, np.nan, m), t), "NaN"),
        (lambda s, lab, m, t: (s, lab + 1, m, t), "labels must be 0"),
        (lambda s, lab, m, t: (s[:-1], lab, m, t), "image scores but"),
        (lambda s, lab, m, t: (s, lab, None, t), "no maps"),
        (lambda s, lab, m, t: (s, lab, list(m[1:]), list(t[1:])), "came with 22 maps"),
        (lambda s, lab, m, t: (s, lab, m[0], t[0]), "maps must have shape"),
        (lambda s, lab, m, t: (s, lab, m[:, None], t[:, None]), "maps must have shape"),
    ],
)
def test_bad_batches_are_refused_with_a_reason(change, message):
    accumulator = MetricsAccumulator(pixel_metrics=True)
    with pytest.raises(DataError, match=message):
        accumulator.add(*change(*make_test_set()))


def test_batches_prepared_in_parallel_threads_give_the_same_numbers():
    """The evaluation prepares batches in several threads and commits them in order: every number,
    AUPRO's region bookkeeping included, equals plain sequential adding."""
    from clipmpcad.evaluation import BackgroundAdder

    data = make_test_set(seed=7, b=40)
    scores, labels, maps, masks = data
    reference = run([3] * 13 + [1], data)
    adder = BackgroundAdder(MetricsAccumulator(pixel_metrics=True), threads=3)
    for start in range(0, 40, 3):
        part = slice(start, start + 3)
        adder.add(scores[part], labels[part], maps[part], masks[part])
    parallel = adder.finish()
    assert parallel.compute() == reference
    np.testing.assert_array_equal(parallel.image_scores, scores)
    assert reference.n_regions > 10
