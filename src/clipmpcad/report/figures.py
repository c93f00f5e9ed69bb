"""Heatmap overlays, mask contours, ROC/PR plots and PNG files, shared by predict and the report.

Plain functions on numpy arrays (STYLE §9). Matplotlib is used through its object API on the Agg
canvas only (no pyplot state, no display); files are written atomically (STYLE §15).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, PngImagePlugin
from scipy import ndimage

from ..atomic import write_bytes
from ..errors import DataError
from ..metrics import Curves

GREEN = (0, 255, 0)  # ground-truth outline
RED = (255, 0, 0)  # predicted-mask outline
DISPLAY_RANGE = (0.0, 1.0)  # fused maps: 0–1 spans the normal references (clean) or the test set (paper)


def display_map(amap: np.ndarray, sigma: float | None) -> np.ndarray:
    """The map as drawn: Gaussian smoothing of `sigma` pixels (None or 0: none); scores never see it."""
    return ndimage.gaussian_filter(np.asarray(amap, dtype=np.float64), sigma=sigma) if sigma else amap


def _normalise(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H,W) → (H,W) float64 in [0, 1]; a flat range maps everything to 0."""
    if not vmax > vmin:
        return np.zeros(amap.shape)
    return np.clip((np.asarray(amap, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"expected an RGB image as uint8 (H,W,3), got {image.dtype} {image.shape}")


def heatmap_overlay(
    image_rgb: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    cmap: str = "jet",
    sigma: float | None = None,
) -> np.ndarray:
    """Blend a colour-mapped anomaly map over an image.

    Args:
        image_rgb: (H,W,3) uint8.
        amap: (H,W) anomaly map; values are clipped to [vmin, vmax] before colouring.
        vmin, vmax: the map values drawn as the two ends of the colour map.
        alpha: weight of the colour layer, in [0, 1].
        cmap: a matplotlib colour map name.
        sigma: Gaussian smoothing (pixels) of the displayed map only; None or 0 for none.

    Returns:
        (H,W,3) uint8: (1 − alpha) · image + alpha · cmap(map).
    """
    _check_rgb(image_rgb)
    if amap.shape != image_rgb.shape[:2]:
        raise DataError(f"map {amap.shape} and image {image_rgb.shape[:2]} differ: resize the map")
    amap = display_map(amap, sigma)
    colours = matplotlib.colormaps[cmap]
    out = np.empty(image_rgb.shape, dtype=np.uint8)
    for top in range(0, amap.shape[0], _OVERLAY_ROWS):  # in bands: a 48-MP photo needs no 6 GB of float64
        rows = slice(top, top + _OVERLAY_ROWS)
        colour = colours(_normalise(amap[rows], vmin, vmax))[..., :3] * 255.0  # (h,W,3)
        blended = (1.0 - alpha) * image_rgb[rows] + alpha * colour
        out[rows] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


_OVERLAY_ROWS = 256  # rows per band of heatmap_overlay


def colour_scale(vmin: float, vmax: float, width: int = 256, height: int = 12) -> np.ndarray:
    """(height, width, 3) uint8: the overlays' colours for map values vmin (left) to vmax (right),
    drawn by heatmap_overlay itself (at full colour weight), so the key cannot drift from the maps."""
    ramp = np.tile(np.linspace(vmin, vmax, width), (height, 1))  # (height, width)
    return heatmap_overlay(np.zeros((height, width, 3), dtype=np.uint8), ramp, vmin, vmax, alpha=1.0)


def draw_contour(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """Copy of `image` (H,W,3) uint8 with the inner outline of `mask` (H,W) painted in `color`.

    The outline is the mask minus its 4-connected erosion (`thickness` times); the image border
    counts as outside, so a mask touching the border is closed there.
    """
    _check_rgb(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask {mask.shape} and image {image.shape[:2]} differ: resize the mask")
    outline = mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    out = image.copy()
    out[outline] = color
    return out


def roc_pr_figure(curves: Mapping[str, Curves], title: str = "") -> bytes:
    """ROC and precision–recall panels as PNG bytes; one line per entry, labelled by its key."""
    figure = Figure(figsize=(9.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    roc, pr = figure.subplots(1, 2)
    for label, c in curves.items():
        roc.plot(c.fpr, c.tpr, label=label)
        pr.step(c.recall, c.precision, where="post", label=label)
    roc.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    labels = {roc: ("false-positive rate", "true-positive rate"), pr: ("recall", "precision")}
    for axes, (x, y) in labels.items():
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=x, ylabel=y)
        axes.grid(alpha=0.3)
        if curves:
            axes.legend(loc="lower right" if axes is roc else "lower left", fontsize=8)
    roc.set_title("ROC")
    pr.set_title("precision–recall")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def png_bytes(array: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """Encode (H,W) uint8/uint16 or (H,W,3) uint8 as PNG, with optional text chunks."""
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    rgb = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (grey or rgb):
        kind = f"{array.dtype} {array.shape}"
        raise DataError(f"PNG takes (H,W) uint8/uint16 or (H,W,3) uint8, got {kind}")
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Save (H,W) uint8/uint16 or (H,W,3) uint8 as a PNG file, atomically."""
    return write_bytes(path, png_bytes(array))


def anomaly_map_to_png16(amap: np.ndarray, vmin: float, vmax: float) -> bytes:
    """(H,W) map → 16-bit greyscale PNG bytes: [vmin, vmax] spread over 0..65535, clipped.

    vmin and vmax travel in the PNG's text chunks, so png16_to_anomaly_map needs nothing else.
    """
    levels = np.rint(_normalise(amap, vmin, vmax) * 65535.0).astype(np.uint16)  # (H,W)
    text = {"clipmpcad:vmin": repr(float(vmin)), "clipmpcad:vmax": repr(float(vmax))}
    return png_bytes(levels, text)


def png16_to_anomaly_map(data: bytes) -> np.ndarray:
    """Inverse of anomaly_map_to_png16, to within (vmax − vmin) / 131070."""
    with Image.open(io.BytesIO(data)) as image:
        try:
            vmin, vmax = float(image.text["clipmpcad:vmin"]), float(image.text["clipmpcad:vmax"])
        except KeyError:
            message = "not a ClipMPCAD 16-bit map: its vmin/vmax text chunks are missing"
            raise DataError(message) from None
        levels = np.asarray(image, dtype=np.float64)  # (H,W)
    return vmin + levels / 65535.0 * (vmax - vmin)
