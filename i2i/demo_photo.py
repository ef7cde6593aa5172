"""`make demo`'s real-size step: one 1200x900 picture through the `native` and `mask` policies
of the export, side by side (out/demo/real-size.png) with times and what `mask` left alone."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import pixels
from .api import open as open_model
from .data.photo import render

SIZE = (1200, 900)
CROP = 240                          # the 1:1 crops' side, at the edge of the large disc
CALM = 0.005                        # "left alone": mask magnitude below this


def real_size(export_dir: Path, out: Path) -> dict:
    picture = render(*SIZE)
    x = pixels.image_tensor(picture)
    shown, facts = {}, {"size": list(SIZE)}
    for policy in ("native", "mask"):
        model = open_model(export_dir, resolution=policy)
        model.translate(picture)                                   # warm-up
        started = time.perf_counter()
        shown[policy] = model.translate(picture)
        facts[f"{policy}_seconds"] = time.perf_counter() - started
    mask = open_model(export_dir, resolution="mask").translate(x, output="mask")
    calm = (mask.abs().amax(0) < CALM).numpy()
    change = np.abs(np.asarray(shown["mask"]).astype(int) - np.asarray(picture).astype(int))
    facts["calm_fraction"] = float(calm.mean())
    facts["calm_max_change"] = int(change[calm].max()) if calm.any() else 0
    _figure(picture, shown, out / "real-size.png")
    return facts


def _figure(picture: Image.Image, shown: dict[str, Image.Image], path: Path) -> None:
    """Top: input, native, mask at a third of their size; bottom: 1:1 crops of the same."""
    w, h = picture.size
    small = (w // 3, h // 3)
    top, left = int(0.45 * h) - CROP // 2, int(0.3 * w + 0.28 * h) - CROP // 2
    pictures = [picture, shown["native"], shown["mask"]]
    canvas = Image.new("RGB", (3 * (small[0] + 8) + 8, small[1] + CROP + 40), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (p, label) in enumerate(zip(pictures, ("input", "native", "mask"), strict=True)):
        canvas.paste(p.resize(small, Image.BILINEAR), (8 + i * (small[0] + 8), 8))
        canvas.paste(p.crop((left, top, left + CROP, top + CROP)),
                     (8 + i * (small[0] + 8), small[1] + 16))
        draw.text((8 + i * (small[0] + 8), small[1] + CROP + 22), label, fill=(0, 0, 0))
    canvas.save(path)


def section(facts: dict) -> str:
    w, h = facts["size"]
    return f"""## A real-size picture

A {w}x{h} picture of the training domain (grain, thin lines, light discs) through the export at
its own size: `native` runs the model on all {w * h} pixels; `mask` computes the mask at the
training size and adds the upsampled change to the full-size picture.

| policy | seconds |
|---|---:|
| native | {facts['native_seconds']:.2f} |
| mask | {facts['mask_seconds']:.2f} |

Under `mask`, {100 * facts['calm_fraction']:.1f}% of the pixels have a mask magnitude below
{CALM}; the largest change there is {facts['calm_max_change']} 8-bit level(s).

![real size](real-size.png)

Left to right: input, native, mask; bottom row: 1:1 crops at the edge of the large disc.
"""



