"""One self-contained, offline HTML report of a test run: worst cases first (METHOD §11).

Everything is inline: CSS in a <style> element, images as base64 PNG data URIs; no script, no
external reference. A test-selected protocol (`paper`) puts a warning banner on top.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import write_text
from ..errors import DataError
from ..metrics import Curves, report_picks, wrongness
from ..protocols import PROTOCOLS, RANDOM_WEIGHTS_NOTE
from .figures import (
    GREEN,
    RED,
    colour_scale,
    display_map,
    draw_contour,
    heatmap_overlay,
    png_bytes,
    roc_pr_figure,
)
from .tables import run_table

THUMBNAIL = 256  # longest side, in pixels, of grid images (never enlarged)
REFERENCE_FEW = 4  # fewer normal reference images than this: the report calls the thresholds rough
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
pre{background:#f5f5f5;padding:8px;overflow:auto;max-height:30em}
.banner{background:#b00020;color:#fff;padding:12px 16px;font-weight:bold;border-radius:4px}
.note{color:#555;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
figure{margin:0;border:1px solid #ddd;padding:6px;border-radius:4px}
figure.wrong{border-color:#b00020;border-width:2px}
figure img{margin-right:4px;vertical-align:top}
figcaption{font-size:.85em;word-break:break-all}
.scale{display:inline-block;font-size:.85em;color:#555;margin:4px 0 10px}
.scale span{display:flex;justify-content:space-between}
"""


@dataclass(frozen=True)
class Case:
    """One test image for the grid, with what the model made of it."""

    name: str
    image: np.ndarray  # (H,W,3) uint8
    amap: np.ndarray  # (H,W) anomaly map at the image's size
    gt_mask: np.ndarray | None  # (H,W) bool ground truth; None where the dataset has no masks
    label: int  # 0 normal, 1 anomalous
    score: float  # image score
    threshold: float  # calibrated image threshold: anomalous when score ≥ threshold
    pixel_threshold: float | None  # predicted mask is amap ≥ this; None: no predicted outline
    vmin: float  # map value at the bottom of the colour scale
    vmax: float  # map value at the top

    @property
    def wrongness(self) -> float:
        """Signed distance of the score to the threshold, positive on the wrong side."""
        return float(wrongness(self.label, self.score, self.threshold))

    @property
    def wrong(self) -> bool:
        """The decision "anomalous when score ≥ threshold" disagrees with the label."""
        return (self.score >= self.threshold) != (self.label == 1)


def worst_first(cases: Sequence[Case], limit: int) -> list[Case]:
    """The `limit` cases furthest on the wrong side of their threshold, worst first (anomalous
    images with the lowest scores, normal images with the highest), up to half of each label
    (metrics.report_picks)."""
    if not cases:
        return []
    picks = report_picks(np.array([c.label for c in cases]), np.array([c.wrongness for c in cases]), limit)
    return [cases[i] for i in picks]


def _img_png(data: bytes, alt: str) -> str:
    """An <img> showing PNG bytes through a data URI, with its pixel size."""
    with Image.open(io.BytesIO(data)) as image:
        w, h = image.size
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" width="{w}" height="{h}" alt="{html.escape(alt)}">'


def _img(array: np.ndarray, alt: str) -> str:
    return _img_png(png_bytes(array), alt)


def _shrink(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize (H,W[,3]) to size (w, h) with PIL; float maps go through mode F."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype != np.uint8:
        array = array.astype(np.float32)
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _case_html(case: Case, thumbnail: int, sigma: float | None) -> str:
    h, w = case.image.shape[:2]
    if case.amap.shape != (h, w) or (case.gt_mask is not None and case.gt_mask.shape != (h, w)):
        raise DataError(f"case {case.name}: image, map and mask must share one (H,W) size")
    scale = min(1.0, thumbnail / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = _shrink(case.image, size, Image.Resampling.BILINEAR)
    amap = _shrink(display_map(case.amap, sigma), size, Image.Resampling.BILINEAR)  # smoothed at full size
    overlay = heatmap_overlay(image, amap, case.vmin, case.vmax)
    if case.gt_mask is not None:
        truth = _shrink(case.gt_mask, size, Image.Resampling.NEAREST).astype(bool)
        image = draw_contour(image, truth, GREEN, thickness=2)
        overlay = draw_contour(overlay, truth, GREEN, thickness=2)
    if case.pixel_threshold is not None:
        predicted = _shrink(case.amap >= case.pixel_threshold, size, Image.Resampling.NEAREST)
        overlay = draw_contour(overlay, predicted.astype(bool), RED, thickness=2)
    verdict = "correct"
    if case.wrong:
        verdict = "missed anomaly" if case.label == 1 else "false alarm"
    caption = (
        f"<b>{html.escape(case.name)}</b><br>{'anomalous' if case.label == 1 else 'normal'} · "
        f"score {case.score:.4g} vs threshold {case.threshold:.4g} · {verdict}"
    )
    css = ' class="wrong"' if case.wrong else ""
    images = _img(image, f"{case.name} image") + _img(overlay, f"{case.name} heatmap")
    return f"<figure{css}>{images}<figcaption>{caption}</figcaption></figure>"


def _reference_note(metrics: Mapping[str, Any]) -> str:
    """How many normal images a reference calibration rests on (a run record's calibration)."""
    cal = metrics.get("calibration") or {}
    n = cal.get("n_reference") if cal.get("source") == "reference" else None
    if not n:
        return ""
    rough = ": with so few, the thresholds are rough (more normal shots steady them)" if n < REFERENCE_FEW else ""
    return f" They were fitted on {n} normal support image{'s' if n > 1 else ''}, scored leave-one-out{rough}."


def _decisions_note(metrics: Mapping[str, Any]) -> str:
    """How the image threshold decided on the whole test set (a run record's decisions)."""
    d = metrics.get("decisions")
    if not d:
        return ""
    return (
        f"<p><b>At the image threshold {d['image_threshold']:.4g}: {d['missed_anomalies']} of {d['anomalous']} "
        f"anomalous images missed, {d['false_alarms']} of {d['normal']} normal images flagged.</b></p>"
    )


def _grid_legend(metrics: Mapping[str, Any], sigma: float | None) -> str:
    """What the grid shows and how it was picked."""
    cal = metrics.get("calibration") or {}
    pixel = cal.get("pixel_threshold")
    has_masks = metrics.get("pixel_auroc") is not None or metrics.get("pixel_metrics_at") is not None
    scale = {
        "reference": " on the fused score's scale, on which the normal reference images span about 0 to 1.",
        "test": " on the fused score's scale, on which this test set spans 0 to 1 (min-max over it).",
        "fixed": ": a probability, the text branch's averaged over the levels.",
    }.get(cal.get("source"), " on the fused score's scale.")
    lines = [
        "Shown: the images furthest on the wrong side of the image threshold first (anomalous images "
        "scored lowest, normal images scored highest), no more than half of the grid from one label while "
        "the other has images left; a red frame marks a wrong decision.",
        "Left: the image; right: its anomaly map, coloured from blue (0) to red (1 and above)" + scale,
    ]
    if has_masks:
        lines.append("Green outline: the ground truth.")
    if pixel is not None and (has_masks or cal.get("source") != "test"):  # else a 0.5 placeholder: none drawn
        lines.append(f"Red outline: the predicted mask, where the map is at least the pixel threshold {pixel:.4g}.")
    if sigma:
        lines.append(f"The colours are smoothed for display (Gaussian, σ = {sigma:g} px); outlines and scores are not.")
    return " ".join(lines)


def protocol_warning(config: Mapping[str, Any]) -> str | None:
    """Banner text when the protocol picks epochs or calibration on the test set, or when the
    backbone has random weights (config["backbone_info"]["random"])."""
    warnings = []
    protocol = PROTOCOLS.get(str(config.get("protocol", "")))
    if (protocol is not None and protocol.test_selected) or config.get("test_selected"):
        name = config.get("protocol", "?")
        warnings.append(
            f"Test-selected protocol ({name}): the epoch and/or the score calibration were chosen "
            "on this test set. These numbers reproduce the published protocol; they are not an "
            "estimate of deployed performance."
        )
    if (config.get("backbone_info") or {}).get("random"):
        warnings.append(RANDOM_WEIGHTS_NOTE)
    return " ".join(warnings) or None


def _scale_html(shown: Sequence[Case]) -> str:
    """The colour key of the grid's maps, from the bottom to the top of their scale; none where the
    cases were drawn on different scales (one key would be wrong for some)."""
    ranges = {(case.vmin, case.vmax) for case in shown}
    if len(ranges) != 1:
        return ""
    ((low, high),) = ranges
    middle = (low + high) / 2
    return (
        f"<div class='scale'>{_img(colour_scale(low, high), f'colour scale from {low:g} to {high:g}')}"
        f"<span><b>{low:g}</b><b>{middle:g}</b><b>{high:g} and above</b></span></div>"
    )


def _curves_html(curves: Mapping[str, Curves | None]) -> str:
    present = {f"{name}-level": c for name, c in curves.items() if c is not None}
    if not present:
        return "<p>No curves: the test set has one class only.</p>"
    return _img_png(roc_pr_figure(present), "ROC and precision-recall curves")


def write_report(
    path: str | Path,
    *,
    title: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    curves: Mapping[str, Curves | None],
    cases: Sequence[Case],
    max_cases: int = 48,
    sigma: float | None = None,
) -> Path:
    """Write the report as one HTML file, atomically; return its path.

    Args:
        path: the .html file to write; its folder must exist.
        title: page title, e.g. "mvtec/bottle, 4-shot, seed 111".
        config: the resolved run configuration (RunConfig.to_dict()), shown verbatim.
        metrics: Metrics.to_dict() of the run, or its metrics record, whose n_test_images (the
            images `cases` were picked from) heads the grid; without it, len(cases) does.
        curves: e.g. {"image": c.image, "pixel": c.pixel} from MetricsAccumulator.curves();
            None entries are left out.
        cases: test images; the `max_cases` worst (see worst_first) are shown.
        max_cases: cap on the grid.
        sigma: Gaussian smoothing, in original pixels, of the displayed maps only; None for none.
    """
    warning = protocol_warning(config)
    shown = worst_first(cases, max_cases)
    total = metrics.get("n_test_images", len(cases))  # a run's report gets only the worst cases
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='banner'>{html.escape(warning)}</p>" if warning else "",
        "<h2>Metrics</h2>",
        run_table(metrics).to_html(),
        "<p class='note'>F1-max and its threshold are chosen on the test set: a measure of "
        "separability, not an operating point. "
        + (
            "This run was calibrated on its test set too (test-selected), so the grid's thresholds "
            "are those F1-max thresholds.</p>"
            if config.get("test_selected")
            else f"The grid uses the calibrated thresholds.{_reference_note(metrics)}</p>"
        ),
        "<h2>ROC and precision–recall curves</h2>",
        _curves_html(curves),
        f"<h2>Test images: {len(shown)} of {total}, worst first</h2>",
        _decisions_note(metrics),
        f"<p class='note'>{html.escape(_grid_legend(metrics, sigma))}</p>",
        _scale_html(shown),
        "<div class='grid'>",
        *(_case_html(case, THUMBNAIL, sigma) for case in shown),
        "</div><h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>",
        "</body></html>",
    ]
    return write_text(path, "\n".join(parts))
