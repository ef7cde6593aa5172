"""Measurements on held-out synthetic shapes: how much a translator changes, and how square.

For circle -> square the right answer is known from each image's metadata: the output should
fill the axis-aligned square that bounds the input circle. A pixel of the output counts as
foreground when it is nearer (RGB distance) to the shape's colour than to the background's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data.shapes import ShapeMeta, SyntheticShapes

CHANGED = 0.1      # a pixel counts as masked when any channel has |m| above this


@dataclass
class ShapeMetrics:
    images: int
    mask_mean_abs: float | None       # mean |m| over pixels and channels (additive only)
    mask_area: float | None           # fraction of pixels with max_c |m| > CHANGED
    change_mean_abs: float            # mean |y - x|
    iou_input: float                  # IoU(foreground of the input, bounding square): pi/4 ideal
    iou_output: float                 # IoU(foreground of the output, bounding square)
    corner_fill: float                # fraction of square-minus-circle pixels that became shape

    def to_dict(self) -> dict:
        return asdict(self)


def held_out(shapes: SyntheticShapes, count: int) -> tuple[torch.Tensor, list[ShapeMeta]]:
    """The first `count` domain-A images of a split: (count, 3, S, S) and their metadata."""
    samples = [shapes.sample("A", i) for i in range(count)]
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


@torch.no_grad()
def translate(module: nn.Module, images: torch.Tensor, batch_size: int = 32
              ) -> dict[str, torch.Tensor]:
    """Run an inference module over (N, 3, H, W) in batches; outputs concatenated on the CPU."""
    device = next(module.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        out = module(images[start:start + batch_size].to(device))
        for name, value in out.items():
            parts.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def foreground(image: torch.Tensor, meta: ShapeMeta) -> torch.Tensor:
    """(3, H, W) -> (H, W) bool: pixels nearer the shape's colour than the background's."""
    fg = torch.tensor(meta.fg_color).view(3, 1, 1)
    bg = torch.tensor(meta.bg_color).view(3, 1, 1)
    return (image - fg).square().sum(0) < (image - bg).square().sum(0)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def shape_metrics(images: torch.Tensor, outputs: dict[str, torch.Tensor],
                  metas: list[ShapeMeta]) -> ShapeMetrics:
    size = images.shape[-1]
    y = outputs["translation"]
    iou_in, iou_out, fill = [], [], []
    for x_i, y_i, meta in zip(images, y, metas, strict=True):
        square = meta.bounding_square(size)
        fg_in, fg_out = foreground(x_i, meta), foreground(y_i, meta)
        corners = square & ~torch.from_numpy(meta.coverage(size) > 0.5)
        iou_in.append(_iou(fg_in, square))
        iou_out.append(_iou(fg_out, square))
        fill.append((fg_out & corners).sum().item() / max(1, corners.sum().item()))
    mask = outputs.get("mask")
    return ShapeMetrics(
        images=len(images),
        mask_mean_abs=None if mask is None else mask.abs().mean().item(),
        mask_area=None if mask is None else
        (mask.abs().amax(1) > CHANGED).float().mean().item(),
        change_mean_abs=(y - images).abs().mean().item(),
        iou_input=sum(iou_in) / len(iou_in),
        iou_output=sum(iou_out) / len(iou_out),
        corner_fill=sum(fill) / len(fill))


def measure(module: nn.Module, size: int, count: int = 64, task: str = "circle2square",
            seed: int = 0) -> tuple[ShapeMetrics, torch.Tensor, dict[str, torch.Tensor]]:
    """Translate `count` held-out test images and measure them."""
    images, metas = held_out(SyntheticShapes(task, size, split="test", seed=seed), count)
    outputs = translate(module, images)
    return shape_metrics(images, outputs, metas), images, outputs
