"""Adapters between i2i's named-tensor modules and exporters that want positional tuples, and
the seeded example inputs that exporters trace with."""

from __future__ import annotations

import torch
from torch import nn

from ..engines.base import check_shared_dims
from ..models.spec import ModelSpec, TensorSpec

__all__ = ["Positional", "check_batch_range", "check_shared_dims", "example_inputs"]


class Positional(nn.Module):
    """forward(*inputs) -> tuple of outputs, both in the signature's order, calling the
    signature's method of `module` (forward, masked, with_strength, ...).

    Exporters name graph inputs and outputs by position; this fixes the positions to the spec.
    """

    def __init__(self, module: nn.Module, spec: ModelSpec):
        super().__init__()
        self.module = module
        self.method = spec.method
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        call = getattr(self.module, self.method)
        out = call(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(out[name] for name in self.output_names)


def example_inputs(spec: ModelSpec, batch: int, size: tuple[int, int], seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Seeded uniform tensors in each input's range: {name: (batch, C, H, W) or (batch, 1)}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        _check_exportable(t)
        low, high = t.range
        shape = (batch, t.channels, *size) if t.spatial else (batch, *t.shape[1:])
        out[t.name] = (torch.rand(shape, generator=g) * (high - low) + low).to(device)
    return out


def check_batch_range(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    """(min, opt, max) of an export's batch range; ValueError unless 1 <= min <= opt <= max."""
    low, opt, high = batch
    if not 1 <= low <= opt <= high:
        raise ValueError(f"batch range {low}:{opt}:{high} must satisfy 1 <= min <= opt <= max")
    return low, opt, high


def _check_exportable(t: TensorSpec) -> None:
    if t.spatial and (len(t.shape) != 4 or t.shape[1] < 0):
        raise ValueError(f"input {t.name!r} has shape {t.shape}; export supports "
                         "(N, C, H, W) images with a fixed C")
