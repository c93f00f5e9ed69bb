"""Synthetic anomalies on normal shots for the normal-only protocol (METHOD §8): Perlin-noise
masks filled with a foreign texture, blended in, as in DRAEM-style training.

Shapes: images (K, 3, S, S) model inputs → anomalous images (K, 3, S, S), masks (K, 1, S, S).
"""

from __future__ import annotations

import numpy as np
import torch

from .data.perlin import fractal_noise, perlin_noise

MIN_AREA, MAX_AREA = 0.01, 0.20  # fraction of the image an anomaly covers


def perlin_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A bool (S, S) mask of thresholded Perlin noise covering 1–20 % of the image."""
    for _ in range(20):
        cells = int(rng.choice([2, 4, 8]))
        noise = perlin_noise((size, size), (cells, cells), rng)
        area = rng.uniform(MIN_AREA, MAX_AREA)
        mask = noise > np.quantile(noise, 1.0 - area)
        if mask.any():
            return mask
    return np.zeros((size, size), dtype=bool)


def foreign_texture(size: int, channels: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A (C, S, S) texture unlike the image: coloured fractal noise at the image's value scale."""
    layers = [fractal_noise((size, size), int(rng.choice([4, 8, 16])), 3, rng) for _ in range(channels)]
    offset = rng.uniform(-1.5, 1.5, size=(channels, 1, 1))
    return (np.stack(layers) * 2.0 + offset) * scale


def synthesise_anomalies(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One anomalous copy of each image, reproducible from `seed`."""
    rng = np.random.default_rng([seed, 7])
    k, c, s, _ = images.shape
    out, masks = images.clone(), torch.zeros(k, 1, s, s)
    for i in range(k):
        scale = float(images[i].std()) or 1.0  # this image's own: no shot depends on the others' values
        mask = torch.from_numpy(perlin_mask(s, rng)).float()  # (S, S)
        texture = torch.from_numpy(foreign_texture(s, c, scale, rng)).float()  # (C, S, S)
        beta = float(rng.uniform(0.5, 1.0))  # opacity of the foreign texture
        blended = (1.0 - beta) * images[i] + beta * texture
        out[i] = images[i] * (1.0 - mask) + blended * mask
        masks[i, 0] = mask
    return out, masks
