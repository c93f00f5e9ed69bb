"""The HTML report: self-contained, worst cases first, and really rendered by headless Chromium."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmpcad.metrics import MetricsAccumulator
from clipmpcad.report import Case, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Test-only: appended to a copy of the report (the report itself has no script) to list images
# that failed to decode once the page has loaded.
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = JSON.stringify({total: document.images.length, bad: bad});
  document.body.appendChild(out);
});</script>"""


def make_cases(n: int = 9, size: int = 40) -> tuple[list[Case], MetricsAccumulator]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    accumulator = MetricsAccumulator(pixel_metrics=True)
    cases = []
    for i in range(n):
        label = i % 2
        image = np.stack([yy * 5, xx * 5, np.full_like(yy, 40 * (i % 5))], axis=-1).astype(np.uint8)
        mask = np.zeros((size, size), dtype=bool)
        if label:
            mask[10:25, 0:15] = True  # touches the left border
        amap = (rng.random((size, size)) * 0.5 + 0.6 * mask).astype(np.float32)
        score = 0.1 * i  # the threshold 0.45 splits them: several cases are wrong on purpose
        accumulator.add(np.array([score]), np.array([label]), amap[None], mask[None])
        cases.append(Case(f"case{i}", image, amap, mask, label, score, 0.45, 0.7, 0.0, 1.1))
    return cases, accumulator


def write(tmp_path: Path, config: dict, max_cases: int = 48, sigma: float | None = None) -> Path:
    cases, accumulator = make_cases()
    curves = accumulator.curves()
    return write_report(
        tmp_path / "report.html",
        title="bottle, 4-shot",
        config=config,
        metrics=accumulator.compute().to_dict(),
        curves={"image": curves.image, "pixel": curves.pixel},
        cases=cases,
        max_cases=max_cases,
        sigma=sigma,
    )


def test_self_contained_worst_first_and_capped(tmp_path):
    path = write(tmp_path, {"protocol": "clean"}, max_cases=5)
    text = path.read_text(encoding="utf-8")
    assert os.listdir(tmp_path) == ["report.html"]  # written atomically: no temporary left
    assert "<script" not in text.lower()
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text
    # how wrong: anomalous 1 and normal 8 by 0.35, anomalous 3 and normal 6 by 0.15, then
    # normal 4 and anomalous 5 right by 0.05 (pairs tie up to rounding)
    names = re.findall(r"<b>(case\d+)</b>", text)
    assert set(names[:2]) == {"case1", "case8"} and set(names[2:4]) == {"case3", "case6"}
    assert len(names) == 5 and names[4] in ("case4", "case5")
    assert text.count("<img") == 2 + 2 * 5  # curves, the colour key, then image and overlay per case
    assert "Test-selected" not in text


def test_paper_protocol_shows_a_banner(tmp_path):
    text = write(tmp_path, {"protocol": "paper"}).read_text(encoding="utf-8")
    assert "class='banner'" in text and "Test-selected protocol (paper)" in text


def test_random_backbone_shows_a_banner_and_clean_real_weights_none(tmp_path):
    text = write(tmp_path, {"protocol": "clean", "backbone_info": {"random": True}}).read_text(encoding="utf-8")
    assert "class='banner'" in text and "RANDOM backbone" in text
    clean = write(tmp_path, {"protocol": "clean", "backbone_info": {"random": False}}).read_text(encoding="utf-8")
    assert "class='banner'" not in clean


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{page.stem}-{len(args)}"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def image_check(tmp_path: Path, html: str, name: str) -> dict:
    """Render a copy of the page with CHECK_SCRIPT and return what it found."""
    page = tmp_path / name
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    done = chromium(tmp_path, page, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="image-check">(.*?)</pre>', done.stdout)
    assert found, f"no result from Chromium: {done.stderr[-2000:]}"
    return json.loads(found.group(1))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/ensure-chromium)")
def test_renders_in_chromium_with_every_image_decoded(tmp_path):
    report = write(tmp_path, {"protocol": "paper"})
    html = report.read_text(encoding="utf-8")
    result = image_check(tmp_path, html, "checked.html")
    assert result == {"total": 2 + 2 * 9, "bad": []}

    # the check can fail: corrupt one case's data URI and it must be reported
    broken = html.replace("base64,iVBOR", "base64,AAAAA", 2)  # the curves, then the colour key
    result = image_check(tmp_path, broken, "broken.html")
    assert sorted(result["bad"]) == ["ROC and precision-recall curves", "colour scale from 0 to 1.1"]

    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, report, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(io.BytesIO(shot.read_bytes())) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert (pixels < 250).any(axis=1).mean() > 0.1  # far from a blank white page
    assert len(np.unique(pixels, axis=0)) > 1000  # heatmaps and photos, not just text
    red_banner = (pixels[:, 0] > 150) & (pixels[:, 1] < 40) & (pixels[:, 2] < 60)
    assert red_banner.sum() > 10_000  # the paper-protocol banner is drawn


def test_decisions_at_the_threshold():
    image, amap = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4))
    at = [Case(f"c{label}", image, amap, None, label, 0.5, 0.5, None, 0, 1) for label in (0, 1)]
    assert at[0].wrong and not at[1].wrong  # anomalous when score ≥ threshold
    below = Case("n", image, amap, None, 1, 0.2, 0.5, None, 0, 1)
    assert below.wrong and below.wrongness == pytest.approx(0.3)


def test_captions_name_the_errors(tmp_path):
    text = write(tmp_path, {"protocol": "clean"}, sigma=2.0).read_text(encoding="utf-8")
    assert text.count("missed anomaly") == 2  # anomalous 1 and 3 score below 0.45
    assert text.count("false alarm") == 2  # normal 6 and 8 score above it
    assert text.count('<figure class="wrong">') == 4


def test_heading_counts_every_test_image_not_only_the_drawn_ones(tmp_path):
    """A run's report is handed only its worst cases: the heading's total is the record's test count."""
    cases, accumulator = make_cases()
    record = {**accumulator.compute().to_dict(), "n_test_images": 584}
    curves = accumulator.curves()
    path = write_report(
        tmp_path / "report.html",
        title="bottle, 4-shot",
        config={"protocol": "clean"},
        metrics=record,
        curves={"image": curves.image, "pixel": curves.pixel},
        cases=cases,
        max_cases=5,
    )
    assert "<h2>Test images: 5 of 584, worst first</h2>" in path.read_text(encoding="utf-8")
    plain = write(tmp_path, {"protocol": "clean"}, max_cases=5).read_text(encoding="utf-8")
    assert "<h2>Test images: 5 of 9, worst first</h2>" in plain  # every test image passed: len(cases)


@pytest.mark.parametrize(("n", "rough"), [(1, True), (3, True), (8, False)])
def test_the_page_says_how_many_normal_images_the_thresholds_rest_on(tmp_path, n, rough):
    cases, accumulator = make_cases()
    metrics = {**accumulator.compute().to_dict(), "calibration": {"source": "reference", "n_reference": n}}
    page = write_report(
        tmp_path / "r.html", title="t", config={"protocol": "clean"}, metrics=metrics, curves={}, cases=cases
    )
    text = page.read_text(encoding="utf-8")
    assert f"fitted on {n} normal support image" in text
    assert ("the thresholds are rough" in text) == rough


def test_the_grid_legend_says_what_the_colours_mean_for_each_calibration():
    from clipmpcad.report.html import _grid_legend

    masks = {"pixel_auroc": 0.9, "calibration": {"source": "reference", "pixel_threshold": 0.587}}
    text = _grid_legend(masks, sigma=4.0)
    assert "normal reference images span about 0 to 1" in text and "Green outline" in text
    assert "pixel threshold 0.587" in text and "σ = 4 px" in text
    paper = _grid_legend({"pixel_auroc": None, "calibration": {"source": "test", "pixel_threshold": 0.5}}, None)
    assert "this test set spans 0 to 1" in paper and "Green" not in paper and "Red outline" not in paper
    fixed = _grid_legend({"calibration": {"source": "fixed", "pixel_threshold": 0.5}}, None)
    assert "a probability" in fixed and "reference" not in fixed


def test_the_colour_key_shows_the_grids_scale_and_only_one_shared_by_every_case(tmp_path):
    import base64

    import matplotlib

    text = write(tmp_path, {"protocol": "clean"}).read_text(encoding="utf-8")
    (uri,) = re.findall(
        r'src="data:image/png;base64,([^"]*)" width="\d+" height="\d+" alt="colour scale from 0 to 1.1"', text
    )
    key = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))
    assert key.shape[1] > 10 * key.shape[0] and (key == key[:1]).all()  # a horizontal bar, the same in every row
    jet = matplotlib.colormaps["jet"](np.linspace(0, 1, key.shape[1]))[:, :3] * 255  # cases' vmin 0 to vmax 1.1
    np.testing.assert_allclose(key[0], jet, atol=1)
    assert "<b>0</b><b>0.55</b><b>1.1 and above</b>" in text
    cases, accumulator = make_cases()
    mixed = [dataclasses.replace(c, vmax=2.0) if i == 0 else c for i, c in enumerate(cases)]
    page = write_report(
        tmp_path / "mixed.html", title="t", config={}, metrics=accumulator.compute().to_dict(), curves={}, cases=mixed
    ).read_text(encoding="utf-8")
    assert "colour scale" not in page
