"""Measurements of a mask-conditioned translator: where it changes the image, and how much the
mask alone changes the translation.

- locality: mean |y - x| inside the mask against outside it, over images and masks;
- diversity: for each input, the mean over pairs of masks of mean |y_i - y_j| between its
  translations under those masks (the paper's claim: different masks, different outputs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations

import torch
from torch import nn


@dataclass
class MaskedChange:
    masks: str
    images: int
    change_inside: float           # mean |y - x| where the mask is 1
    change_outside: float          # mean |y - x| where it is 0 (nan for a full mask)
    mask_area: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def translate_with(module: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                   batch_size: int = 32) -> torch.Tensor:
    """(N, C, H, W) translations of images (N, C, H, W) under masks (N, 1, H, W)."""
    module.eval()
    device = next(module.parameters()).device
    parts = []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        out = module(images[start:stop].to(device), masks[start:stop].to(device))
        parts.append(out["translation"].float().cpu())
    return torch.cat(parts)


def masked_change(name: str, images: torch.Tensor, outputs: torch.Tensor, masks: torch.Tensor
                  ) -> MaskedChange:
    change = (outputs - images).abs().mean(dim=1, keepdim=True)           # (N, 1, H, W)
    inside, outside = masks > 0.5, masks <= 0.5
    return MaskedChange(
        masks=name, images=len(images),
        change_inside=change[inside].mean().item() if inside.any() else float("nan"),
        change_outside=change[outside].mean().item() if outside.any() else float("nan"),
        mask_area=inside.float().mean().item())


def diversity(outputs: list[torch.Tensor]) -> float:
    """Mean over inputs and over pairs of masks of mean |y_i - y_j|; outputs[k] (N, C, H, W)
    are the translations of the same N inputs under mask k."""
    if len(outputs) < 2:
        raise ValueError("diversity needs translations under at least two masks")
    pairs = [(a - b).abs().mean().item() for a, b in combinations(outputs, 2)]
    return sum(pairs) / len(pairs)
