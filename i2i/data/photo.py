"""A real-size picture of the synthetic shapes' domain, for trying resolution policies where no
photograph can be downloaded: a smooth ground with grain at several scales, light discs and a
square, and thin lines a squashing policy would blur; deterministic for a seed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def render(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB picture of width x height pixels."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ground = 60 + 40 * (xx / width) + 25 * np.sin(yy / height * 3.1)
    for k in (1, 4, 16):                                      # grain at 8, 32 and 128 px
        cells = g.normal(0, 6 / k, (height // (8 * k) + 1, width // (8 * k) + 1))
        ground += np.kron(cells, np.ones((8 * k, 8 * k), np.float32))[:height, :width]
    rgb = np.stack([ground * 0.8, ground * 0.9, ground * 1.1], -1)
    del yy, xx, ground
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    del rgb
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    for cx, cy, r in ((0.3, 0.45, 0.28), (0.72, 0.35, 0.16), (0.78, 0.78, 0.1)):
        draw.ellipse([cx * width - r * side, cy * height - r * side, cx * width + r * side,
                      cy * height + r * side], fill=(215, 200, 160))
    draw.rectangle([0.05 * width, 0.78 * height, 0.2 * width, 0.95 * height],
                   fill=(190, 210, 220))
    for i in range(0, width, max(4, width // 200)):
        draw.line([i, 0, i + height // 3, height], fill=(90, 80, 70), width=1)
    noisy = np.asarray(img).astype(np.int16) + g.integers(-6, 7, (height, width, 3),
                                                         dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
