"""Adapters between i2i's named-tensor modules and exporters that want positional tuples."""

from __future__ import annotations

import torch
from torch import nn

from ..models.spec import ModelSpec


class Positional(nn.Module):
    """forward(*inputs) -> tuple of outputs, both in the spec's order.

    Exporters name graph inputs and outputs by position; this fixes the positions to the spec.
    """

    def __init__(self, module: nn.Module, spec: ModelSpec):
        super().__init__()
        self.module = module
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(out[name] for name in self.output_names)


def example_inputs(spec: ModelSpec, batch: int, size: tuple[int, int], seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Seeded uniform tensors in each input's range: {name: (batch, C, H, W)}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        if len(t.shape) != 4 or t.shape[1] < 0:
            raise ValueError(f"input {t.name!r} has shape {t.shape}; export supports "
                             "(N, C, H, W) images with a fixed C")
        low, high = t.range
        x = torch.rand((batch, t.shape[1], *size), generator=g) * (high - low) + low
        out[t.name] = x.to(device)
    return out
