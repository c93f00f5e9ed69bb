"""Overlays, contours, PNG files and the ROC/PR figure, on arrays small enough to check by hand."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from clipmpcad.errors import DataError
from clipmpcad.metrics import rank_scores
from clipmpcad.metrics.ranking import curves_from_sorted, split_sorted
from clipmpcad.report import (
    anomaly_map_to_png16,
    draw_contour,
    heatmap_overlay,
    png16_to_anomaly_map,
    roc_pr_figure,
    save_png,
)

JET_LOW = (0, 0, 127.5)  # jet at 0: (0, 0, 0.5)
JET_HIGH = (127.5, 0, 0)  # jet at 1: (0.5, 0, 0)


def test_overlay_colours_each_pixel_by_its_clipped_value():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    amap = np.array([[0.0, 1.0, 5.0], [-3.0, 1.0, 0.0]])  # 5 and −3 lie outside [0, 1]
    out = heatmap_overlay(image, amap, vmin=0.0, vmax=1.0, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    high = np.rint(0.5 * 100 + 0.5 * np.array(JET_HIGH))
    low = np.rint(0.5 * 100 + 0.5 * np.array(JET_LOW))
    for y, x in [(0, 1), (0, 2), (1, 1)]:
        np.testing.assert_allclose(out[y, x], high, atol=1)
    for y, x in [(0, 0), (1, 0), (1, 2)]:
        np.testing.assert_allclose(out[y, x], low, atol=1)
    np.testing.assert_array_equal(heatmap_overlay(image, amap, 0.0, 1.0, alpha=0.0), image)


def test_a_large_overlay_is_drawn_in_bands_the_same_and_in_bounded_memory():
    import tracemalloc

    import matplotlib

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2000, 1500, 3), dtype=np.uint8)
    amap = rng.random((2000, 1500)).astype(np.float32)
    tracemalloc.start()
    out = heatmap_overlay(image, amap, 0.2, 0.9, alpha=0.4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 150 * 2**20  # all at once in float64 it is about 200 bytes a pixel: 600 MB here
    rows = [0, 255, 256, 257, 1999]  # across band edges
    colour = matplotlib.colormaps["jet"](np.clip((amap[rows].astype(np.float64) - 0.2) / 0.7, 0, 1))[..., :3] * 255
    expected = np.clip(np.rint(0.6 * image[rows] + 0.4 * colour), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[rows], expected)


def test_smoothing_changes_the_display_only():
    image = np.zeros((9, 9, 3), dtype=np.uint8)
    amap = np.zeros((9, 9))
    amap[4, 4] = 1.0
    sharp = heatmap_overlay(image, amap, 0.0, 1.0, alpha=1.0)
    smooth = heatmap_overlay(image, amap, 0.0, 1.0, alpha=1.0, sigma=1.0)
    assert amap[4, 4] == 1.0 and amap.sum() == 1.0  # the caller's map is untouched
    assert (sharp[4, 3] == sharp[0, 0]).all()  # unsmoothed: the neighbour keeps the low colour
    assert (smooth[4, 3] != smooth[0, 0]).any()  # smoothed: the peak spreads to its neighbours
    np.testing.assert_array_equal(smooth, smooth[::-1, ::-1])  # and stays symmetric


def test_contour_is_the_inner_outline_and_closes_on_the_border():
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    mask = np.zeros((7, 7), dtype=bool)
    mask[2:5, 2:5] = True  # a 3×3 square inside
    mask[0:2, 5:7] = True  # a 2×2 square in the top-right corner
    out = draw_contour(image, mask, (0, 255, 0))
    painted = {(int(y), int(x)) for y, x in zip(*np.nonzero(out[..., 1]), strict=True)}
    square = {(y, x) for y in range(2, 5) for x in range(2, 5)} - {(3, 3)}
    corner = {(0, 5), (0, 6), (1, 5), (1, 6)}  # all four: the border counts as outside
    assert painted == square | corner
    assert (out[..., 0] == 0).all() and (out[..., 2] == 0).all() and image.max() == 0


def test_thicker_contour():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 2:7] = True
    out = draw_contour(np.zeros((9, 9, 3), np.uint8), mask, (255, 0, 0), thickness=2)
    assert np.count_nonzero(out[..., 0]) == 25 - 1  # 5×5 square minus its centre


def test_shape_mismatch_is_refused():
    with pytest.raises(DataError, match="resize the map"):
        heatmap_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)), 0, 1)
    with pytest.raises(DataError, match="uint8"):
        draw_contour(np.zeros((4, 4, 3)), np.zeros((4, 4), bool), (1, 1, 1))


def test_png16_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    amap = rng.uniform(-0.5, 2.5, size=(13, 17))
    data = anomaly_map_to_png16(amap, vmin=-0.5, vmax=2.5)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I;16") and image.size == (17, 13)
    back = png16_to_anomaly_map(data)
    assert np.abs(back - amap).max() <= 3.0 / 131070 + 1e-12
    clipped = png16_to_anomaly_map(anomaly_map_to_png16(np.array([[-9.0, 9.0]]), 0.0, 1.0))
    np.testing.assert_allclose(clipped, [[0.0, 1.0]])
    plain = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint16)).save(plain, format="PNG")
    with pytest.raises(DataError, match="vmin/vmax"):
        png16_to_anomaly_map(plain.getvalue())


def test_save_png_is_atomic(tmp_path, monkeypatch):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = save_png(rgb, tmp_path / "a.png")
    assert os.listdir(tmp_path) == ["a.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((2, 2), np.uint8), tmp_path / "a.png")
    assert os.listdir(tmp_path) == ["a.png"]  # no temporary left behind, old file intact
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    with pytest.raises(DataError, match="PNG takes"):
        save_png(np.zeros((2, 2), np.float32), tmp_path / "b.png")


def test_roc_pr_figure_is_a_drawn_png():
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.4).astype(int)
    scores = rng.random(200) + labels
    curves = curves_from_sorted(*split_sorted(scores, labels))
    auroc = rank_scores(scores, labels).auroc
    data = roc_pr_figure({f"image (AUROC {100 * auroc:.1f}%)": curves})
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (420, 900, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # lines, text, antialiasing
