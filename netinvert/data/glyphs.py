"""Procedurally drawn 20x20 glyphs of six Roman-numeral symbols (the ``roman-mlp`` data set).

Each glyph is a few strokes in a unit box, drawn anti-aliased after a random affine map
(scale, slant, rotation, shift) with a random stroke width, plus pixel noise.
"""

from __future__ import annotations

import numpy as np

SYMBOLS = ("I", "II", "III", "IV", "V", "X")
SIZE = 20

_Segment = tuple[float, float, float, float]
_STROKES: dict[str, list[_Segment]] = {
    "I": [(0.5, 0.0, 0.5, 1.0)],
    "II": [(0.3, 0.0, 0.3, 1.0), (0.7, 0.0, 0.7, 1.0)],
    "III": [(0.15, 0.0, 0.15, 1.0), (0.5, 0.0, 0.5, 1.0), (0.85, 0.0, 0.85, 1.0)],
    "IV": [(0.1, 0.0, 0.1, 1.0), (0.35, 0.0, 0.625, 1.0), (0.625, 1.0, 0.9, 0.0)],
    "V": [(0.15, 0.0, 0.5, 1.0), (0.5, 1.0, 0.85, 0.0)],
    "X": [(0.15, 0.0, 0.85, 1.0), (0.85, 0.0, 0.15, 1.0)],
}


def render_glyphs(n: int, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` glyphs with balanced labels: images (n, 1, 20, 20) float32 in [0, 1], labels (n,) int64."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SYMBOLS)
    rng.shuffle(labels)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)
    images = np.empty((n, 1, SIZE, SIZE), dtype=np.float32)
    for i, label in enumerate(labels):
        images[i, 0] = _draw(_STROKES[SYMBOLS[label]], pixels, rng).reshape(SIZE, SIZE)
    images += rng.normal(0.0, noise, images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0), labels.astype(np.int64)


def _draw(strokes: list[_Segment], pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height = rng.uniform(11.0, 16.0)
    width = height * rng.uniform(0.55, 0.85)
    slant = rng.uniform(-0.25, 0.25)
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    centre = SIZE / 2 + rng.uniform(-2.0, 2.0, size=2)
    stroke = rng.uniform(1.0, 2.4)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shape = np.array([[width, -slant * height], [0.0, height]])
    affine = rot @ shape
    seg = np.asarray(strokes, dtype=np.float64).reshape(-1, 2, 2) - 0.5
    ends = seg @ affine.T + centre
    a, b = ends[:, 0][:, None, :], ends[:, 1][:, None, :]
    ab = b - a
    t = np.clip(((pixels[None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(pixels[None] - (a + t[..., None] * ab), axis=-1).min(axis=0)
    return np.clip(stroke / 2 + 0.5 - dist, 0.0, 1.0)
