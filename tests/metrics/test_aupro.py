"""AUPRO against a brute-force curve written out here, threshold by threshold."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import pytest
from scipy import ndimage

from clipmpcad.errors import ConfigError
from clipmpcad.metrics import MetricsAccumulator, label_regions


def brute_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, ids: np.ndarray | None = None) -> float:
    """The MVTec definition, slowly: one curve point per distinct score, trapezoid to the limit.
    ids: (B,H,W) region ids given per image (> 0 on masks); None: 8-connected regions."""
    regions = []  # boolean (B,H,W) masks, one per region of each image
    for b in range(len(masks)):
        labels = ndimage.label(masks[b], structure=np.ones((3, 3)))[0] if ids is None else ids[b]
        for k in np.unique(labels[labels > 0]):
            region = np.zeros(masks.shape, dtype=bool)
            region[b] = labels == k
            regions.append(region)
    free = ~masks  # anomaly-free pixels of all images, normal images included
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:  # descending distinct thresholds: ties merged
        above = maps >= t
        xs.append(np.sum(above & free) / np.sum(free))
        ys.append(np.mean([np.sum(above & r) / np.sum(r) for r in regions]))
    xs.append(1.0)
    ys.append(1.0)
    area = 0.0
    for i in range(1, len(xs)):
        if xs[i] <= fpr_limit:
            area += 0.5 * (ys[i] + ys[i - 1]) * (xs[i] - xs[i - 1])
    if fpr_limit not in xs:
        i = bisect_right(xs, fpr_limit)  # first point beyond the limit
        y_at = ys[i - 1] + (ys[i] - ys[i - 1]) * (fpr_limit - xs[i - 1]) / (xs[i] - xs[i - 1])
        area += 0.5 * (ys[i - 1] + y_at) * (fpr_limit - xs[i - 1])
    return area / fpr_limit


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float | None:
    accumulator = MetricsAccumulator(pixel_metrics=True)
    labels = masks.any(axis=(1, 2)).astype(int)
    accumulator.add(maps.max(axis=(1, 2)), labels, maps, masks)
    return accumulator.compute(fpr_limit).pixel_aupro


def blobs(rng: np.random.Generator, b: int, h: int, w: int, quantise: int | None) -> tuple:
    masks = np.zeros((b, h, w), dtype=bool)
    for i in range(1, b):  # image 0 stays normal
        for _ in range(int(rng.integers(1, 4))):  # several regions per image
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
    maps = rng.random((b, h, w)) + 0.6 * masks
    maps = np.round(maps, quantise) if quantise is not None else maps
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("quantise", [None, 1, 2])
def test_random_maps_match_brute_force(seed, quantise):
    maps, masks = blobs(np.random.default_rng(seed), 4, 12, 14, quantise)
    assert aupro(maps, masks) == pytest.approx(brute_aupro(maps, masks), abs=1e-9)


@pytest.mark.parametrize("fpr_limit", [0.01, 0.05, 0.3, 0.5, 1.0])
def test_other_limits_match_brute_force(fpr_limit):
    maps, masks = blobs(np.random.default_rng(42), 3, 10, 10, 2)
    expected = brute_aupro(maps, masks, fpr_limit)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_mask_on_the_border_and_regions_touching_at_a_corner():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 0:3, 0:2] = True  # touches the top-left border
    masks[0, 3:5, 2:4] = True  # touches the first region only diagonally: same 8-connected region
    masks[0, 6:8, 6:8] = True  # a second region, in the bottom-right corner
    masks[1, 7, :] = True  # bottom row of the second image
    _, sizes = label_regions(masks)
    assert sorted(sizes.tolist()) == [4, 8, 10]
    rng = np.random.default_rng(0)
    maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    assert aupro(maps, masks) == pytest.approx(brute_aupro(maps, masks), abs=1e-9)


def test_regions_weigh_equally_whatever_their_size():
    # one huge region found entirely, one single-pixel region missed: PRO = ½ wherever FPR < 1
    masks = np.zeros((1, 20, 20), dtype=bool)
    masks[0, :10, :10] = True
    masks[0, 15, 15] = True
    maps = np.zeros(masks.shape, dtype=np.float32)
    maps[0, :10, :10] = 1.0  # the big region scores above every anomaly-free pixel
    maps[0, 15, 15] = -1.0  # the small one below all of them
    assert aupro(maps, masks) == pytest.approx(0.5)
    assert brute_aupro(maps, masks) == pytest.approx(0.5)


def test_analytic_values():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[1, 2:4, 2:4] = True
    perfect = masks.astype(np.float32)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    # one score everywhere: the curve is the diagonal, area 0.3²/2, normalised 0.15
    assert aupro(np.full(masks.shape, 0.7, np.float32), masks) == pytest.approx(0.15)
    assert aupro(1 - perfect, masks) == pytest.approx(0.0)


def test_undefined_without_regions():
    maps = np.random.default_rng(1).random((3, 5, 5)).astype(np.float32)
    assert aupro(maps, np.zeros(maps.shape, dtype=bool)) is None


def test_limit_outside_unit_interval_is_refused():
    accumulator = MetricsAccumulator(pixel_metrics=True)
    with pytest.raises(ConfigError, match="fpr_limit must be in"):
        accumulator.compute(fpr_limit=0.0)


@pytest.mark.parametrize("seed", range(3))
def test_given_regions_are_the_regions_whatever_their_shape(seed):
    """Region ids given in place of masks (as at the model size: labelled on the original mask):
    each id of an image is one region, connected or not; equal ids in two images are two."""
    rng = np.random.default_rng(seed)
    maps, masks = blobs(rng, 9, 14, 15, quantise=2)
    labels = ndimage.label(masks, structure=np.zeros((3, 3, 3), dtype=bool) | np.ones((1, 3, 3), dtype=bool))[0]
    merged = np.where(labels > 0, rng.integers(1, 3, labels.max() + 1)[labels], 0)  # ids 1 and 2 in every image
    accumulator = MetricsAccumulator(pixel_metrics=True)
    for part in (slice(0, 4), slice(4, 9)):  # two batches: ids are per image, not per batch
        accumulator.add(maps[part].max(axis=(1, 2)), masks[part].any(axis=(1, 2)), maps[part], None, merged[part])
    metrics = accumulator.compute()
    assert metrics.n_regions == sum(len(np.unique(m[m > 0])) for m in merged)
    assert metrics.pixel_aupro == pytest.approx(brute_aupro(maps, masks, ids=merged), abs=1e-12)
    assert metrics.pixel_aupro != pytest.approx(brute_aupro(maps, masks), abs=1e-6)  # not masks' own regions
    accumulator = MetricsAccumulator(pixel_metrics=True)  # masks' own regions given as ids: the same numbers
    accumulator.add(maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, None, labels)
    assert accumulator.compute().pixel_aupro == pytest.approx(aupro(maps, masks), abs=1e-12)
