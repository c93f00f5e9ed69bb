"""Perlin gradient noise and the blob masks cut from it (METHOD §8 normal-only mode, §10).

Classic 2-D gradient noise (Perlin 1985, with the 6t⁵−15t⁴+10t³ fade of Perlin 2002): random
unit gradients on a lattice of `cells` cells, dot products with the offsets to the four
corners, blended by the fade curve. All randomness comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Noise (H, W) in about [-1, 1], smooth at the scale of H/cells_y × W/cells_x pixels."""
    h, w = shape
    cy, cx = max(1, int(cells[0])), max(1, int(cells[1]))
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(cy + 1, cx + 1))
    gy, gx = np.sin(angles), np.cos(angles)  # (cy+1, cx+1) unit gradients
    ys, xs = np.arange(h) * (cy / h), np.arange(w) * (cx / w)
    y0, x0 = np.floor(ys).astype(int)[:, None], np.floor(xs).astype(int)[None, :]
    fy, fx = (ys[:, None] - y0), (xs[None, :] - x0)  # (H, 1), (1, W) offsets in the cell

    def corner(dy: int, dx: int) -> np.ndarray:  # (H, W) dot(gradient, offset to corner)
        return gy[y0 + dy, x0 + dx] * (fy - dy) + gx[y0 + dy, x0 + dx] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return np.sqrt(2.0) * (top * (1 - v) + bottom * v)  # (H, W)


def fractal_noise(
    shape: tuple[int, int], cells: int, octaves: int, rng: np.random.Generator, persistence: float = 0.5
) -> np.ndarray:
    """Sum of `octaves` Perlin layers, cell count doubling and amplitude × persistence each time,
    scaled back to about [-1, 1]. (H, W)."""
    total = np.zeros(shape)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        n = cells * 2**octave
        total += amplitude * perlin_noise(shape, (n, n), rng)
        norm += amplitude
        amplitude *= persistence
    return total / norm


def perlin_blob(
    shape: tuple[int, int],
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    rng: np.random.Generator,
    roughness: float = 0.35,
) -> np.ndarray:
    """Bool mask (H, W) of an ellipse whose outline is pushed in and out by Perlin noise.

    Args:
        center, radii: (y, x) in pixels. angle: rotation in radians.
        roughness: how far the outline wanders, as a fraction of the radius.
    """
    distance = ellipse_distance(shape, center, radii, angle)
    wobble = perlin_noise(shape, (4, 4), rng)
    return distance + roughness * wobble < 1.0


def ellipse_distance(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float = 0.0
) -> np.ndarray:
    """Normalised elliptical distance (H, W): 0 at the centre, 1 on the outline."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    along, across = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((across / radii[0]) ** 2 + (along / radii[1]) ** 2)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)
