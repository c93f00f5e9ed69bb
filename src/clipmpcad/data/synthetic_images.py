"""Synthetic pictures: MRI-like brain slices, chest films, tiled surfaces, anomalies (METHOD §10).

Pure numpy, no I/O: each `draw_*` takes an image size S and a generator and returns a
`Drawn` (uint8 pixels and the bool mask of what was changed). Anomalies are structured
(Perlin-noise blobs, ellipses, curved scratches) and cover a few % to about 15 % of the
picture, so that patch features can localise them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clipmpcad.data.perlin import ellipse_distance, fractal_noise, perlin_blob

AREA_RANGE = (0.03, 0.12)  # anomaly area as a fraction of the image: a few % to ~15 %


@dataclass(frozen=True)
class Drawn:
    """A synthetic picture and its ground truth."""

    pixels: np.ndarray  # (S, S) or (S, S, 3) uint8
    mask: np.ndarray  # (S, S) bool: True where the anomaly was drawn; all False if normal


def draw_brain(size: int, rng: np.random.Generator, anomalous: bool) -> Drawn:
    """Axial MRI-like slice: dark background, bright skull ring, textured symmetric brain,
    two dark ventricles; an anomaly is a hyperintense lesion with a soft, irregular edge."""
    rng, anomaly_rng = rng.spawn(2)  # the anomaly never changes the normal picture under it
    shape = (size, size)
    center = (size * (0.5 + rng.uniform(-0.03, 0.03)), size * (0.5 + rng.uniform(-0.03, 0.03)))
    radii = (size * rng.uniform(0.40, 0.45), size * rng.uniform(0.32, 0.37))
    d = ellipse_distance(shape, center, radii, rng.uniform(-0.12, 0.12))
    texture = fractal_noise(shape, 4, 3, rng)
    texture = 0.5 * (texture + texture[:, ::-1])  # roughly symmetric hemispheres
    folds = np.abs(fractal_noise(shape, 6, 2, rng)) < 0.06  # dark sulci in the cortex band
    img = np.full(shape, 0.03)
    img[d < 1.0] = 0.80  # skull
    brain = d < 0.90
    img[brain] = 0.42 + 0.10 * texture[brain] + np.where(texture[brain] > 0.05, 0.08, 0.0)
    img[brain & folds & (d > 0.60)] -= 0.14
    for side in (-1, 1):  # ventricles, mirrored about the midline
        v = ellipse_distance(
            shape, (center[0] - 0.05 * size, center[1] + side * 0.07 * size), (0.11 * size, 0.04 * size), side * 0.35
        )
        img[v < 1.0] = 0.14
    img += rng.normal(0.0, 0.015, shape)
    mask = np.zeros(shape, dtype=bool)
    if anomalous:
        mask = _place_blob(shape, d < 0.75, anomaly_rng)
        lesion = 0.40 + 0.08 * fractal_noise(shape, 8, 2, anomaly_rng)
        img = img + lesion * ndimage.gaussian_filter(mask.astype(float), 1.2)
    return Drawn(_to_uint8(img), mask)


def draw_chest(size: int, rng: np.random.Generator, anomalous: bool) -> Drawn:
    """Frontal chest film: bright body, two dark lungs crossed by ribs, mediastinum and heart;
    an anomaly is a cloudy opacity inside one lung."""
    rng, anomaly_rng = rng.spawn(2)
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    mid = 0.5 + rng.uniform(-0.02, 0.02)
    body = ellipse_distance(shape, (0.55 * size, mid * size), (0.60 * size, 0.47 * size)) < 1
    img = np.where(body, 0.62, 0.08) + 0.05 * fractal_noise(shape, 3, 2, rng)
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        lung = ellipse_distance(
            shape, (0.47 * size, (mid + side * 0.2) * size), (0.31 * size, 0.14 * size), side * 0.08
        )
        lungs |= lung < 1.0
    ribs = np.sin(2 * np.pi * (yy + 0.9 * (xx - mid) ** 2) / rng.uniform(0.085, 0.1)) > 0.55
    img[lungs] = 0.24 + 0.04 * fractal_noise(shape, 6, 2, rng)[lungs]
    img[lungs & ribs] += 0.12
    heart = ellipse_distance(shape, (0.62 * size, (mid - 0.05) * size), (0.14 * size, 0.12 * size)) < 1
    img[(heart | (np.abs(xx - mid) < 0.05)) & body] = 0.70
    img = ndimage.gaussian_filter(img, 0.8) + rng.normal(0.0, 0.012, shape)
    mask = np.zeros(shape, dtype=bool)
    if anomalous:
        mask = _place_blob(shape, lungs & ~heart, anomaly_rng, area=(0.03, 0.09))
        cloud = 0.30 * (0.75 + 0.25 * fractal_noise(shape, 8, 2, anomaly_rng))
        img = img + cloud * ndimage.gaussian_filter(mask.astype(float), 1.5)
    return Drawn(_to_uint8(img), mask)


def draw_tile(size: int, rng: np.random.Generator, defect: str | None) -> Drawn:
    """Ceramic-tile surface in RGB: mottled glaze in a grid of grout lines. `defect` is None,
    "scratch" (bright curved strokes) or "stain" (a dark Perlin-noise blot)."""
    rng, anomaly_rng = rng.spawn(2)
    shape = (size, size)
    base = np.array([0.63, 0.55, 0.45]) + rng.uniform(-0.02, 0.02, 3)
    luma = 0.07 * fractal_noise(shape, 6, 4, rng) + rng.normal(0.0, 0.02, shape)
    period, offset = size / 4, rng.uniform(0, 3)
    yy, xx = np.mgrid[0:size, 0:size] + offset
    grout = (np.mod(yy, period) < 2.5) | (np.mod(xx, period) < 2.5)
    img = base[None, None, :] + luma[..., None]
    img[grout] = 0.33 + 0.03 * rng.standard_normal((int(grout.sum()), 1))
    mask = np.zeros(shape, dtype=bool)
    if defect == "scratch":
        mask, soft = _scratches(shape, anomaly_rng)
        img = img + 0.35 * soft[..., None]
    elif defect == "stain":
        mask = _place_blob(shape, np.ones(shape, dtype=bool), anomaly_rng)
        alpha = 0.7 * ndimage.gaussian_filter(mask.astype(float), 1.5)
        alpha *= 0.8 + 0.2 * fractal_noise(shape, 8, 2, anomaly_rng)
        img = img * (1 - alpha[..., None]) + np.array([0.25, 0.16, 0.08]) * alpha[..., None]
    elif defect is not None:
        raise ValueError(f"unknown tile defect {defect!r}; choices: scratch, stain")
    return Drawn(_to_uint8(img), mask)


def _place_blob(
    shape: tuple[int, int], region: np.ndarray, rng: np.random.Generator, area: tuple[float, float] = AREA_RANGE
) -> np.ndarray:
    """A Perlin-edged elliptical blob inside `region` covering a fraction `area` of the image."""
    h, w = shape
    candidates = np.argwhere(ndimage.binary_erosion(region, iterations=max(2, h // 16)))
    blob = np.zeros(shape, dtype=bool)
    for _ in range(20):  # retry until the clipped blob is big enough
        target = rng.uniform(*area) * h * w
        aspect = rng.uniform(0.55, 1.0)
        ry = np.sqrt(target / (np.pi * aspect))
        cy, cx = candidates[rng.integers(len(candidates))]
        blob = perlin_blob(shape, (cy, cx), (ry, ry * aspect), rng.uniform(0, np.pi), rng) & region
        if blob.sum() >= area[0] * h * w * 0.8:
            break
    return blob


def _scratches(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1–3 curved strokes (quadratic Bézier): bool mask and soft intensity, each (H, W)."""
    h, w = shape
    line = np.zeros(shape, dtype=bool)
    t = np.linspace(0.0, 1.0, 4 * (h + w))[:, None]
    for _ in range(rng.integers(1, 4)):
        p0, p2 = rng.uniform(0.1, 0.9, 2) * (h, w), rng.uniform(0.1, 0.9, 2) * (h, w)
        while np.hypot(*(p2 - p0)) < 0.4 * h:
            p2 = rng.uniform(0.1, 0.9, 2) * (h, w)
        p1 = (p0 + p2) / 2 + rng.normal(0.0, 0.25 * h, 2)  # bend
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (T, 2)
        idx = np.clip(np.round(pts).astype(int), 0, [h - 1, w - 1])
        line[idx[:, 0], idx[:, 1]] = True
    distance = ndimage.distance_transform_edt(~line)
    half_width = rng.uniform(1.5, 2.5)
    soft = np.clip(half_width + 0.5 - distance, 0.0, 1.0)  # anti-aliased edge
    return distance <= half_width, soft


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
