"""Adapters between i2i's named-tensor modules and exporters that want positional tuples, and the
masked variant that models declaring `masked_inputs` are exported with."""

from __future__ import annotations

import torch
from torch import nn

from ..models.spec import ModelSpec, TensorSpec


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


class Masked(nn.Module):
    """forward(**inputs) -> module.translate(**inputs), limited to the variant spec's outputs.

    A model opts in with a class attribute `masked_inputs` (TensorSpecs of the extra keyword
    arguments its translate() takes, e.g. LOMIT's user mask).
    """

    call = "translate"          # the method this variant runs (recorded in the manifest)

    def __init__(self, module: nn.Module, spec: ModelSpec):
        super().__init__()
        self.module = module
        self.output_names = [t.name for t in spec.outputs]

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module.translate(**inputs)
        return {name: out[name] for name in self.output_names}


def masked_spec(module: nn.Module, spec: ModelSpec) -> ModelSpec | None:
    """The masked variant's spec, or None when the module declares no `masked_inputs`.

    Inputs: the model's, then the masked ones. Outputs: the model's, less any named like a masked
    input (translate() returns a given mask unchanged, and ONNX and Triton names must be unique).
    """
    extra = tuple(getattr(module, "masked_inputs", ()))
    if not extra:
        return None
    names = [t.name for t in spec.inputs]
    clash = [t.name for t in extra if t.name in names]
    if clash:
        raise ValueError(f"{type(module).__name__}.masked_inputs repeats the input(s) {clash}; "
                         f"masked inputs are taken in addition to {names}, so give them new names")
    for t in extra:
        _check_image_like(t)
    extra_names = {t.name for t in extra}
    outputs = tuple(t for t in spec.outputs if t.name not in extra_names)
    return ModelSpec(spec.inputs + extra, outputs, spec.size_multiple, spec.channels)


def example_inputs(spec: ModelSpec, batch: int, size: tuple[int, int], seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Seeded uniform tensors in each input's range: {name: (batch, C, H, W)}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        _check_image_like(t)
        low, high = t.range
        x = torch.rand((batch, t.shape[1], *size), generator=g) * (high - low) + low
        out[t.name] = x.to(device)
    return out


def check_shared_dims(inputs: dict[str, torch.Tensor], where: object) -> None:
    """ValueError unless every (N, C, H, W) input has the same N, H and W: the graphs are
    exported with one batch, height and width dimension for all their inputs."""
    shapes = {name: tuple(x.shape) for name, x in inputs.items()}
    if len({(s[0], *s[2:]) for s in shapes.values()}) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{where} takes inputs that share batch, height and width; got "
                         f"{listed}: resize or pad them to one (N, H, W)")


def _check_image_like(t: TensorSpec) -> None:
    if len(t.shape) != 4 or t.shape[1] < 0:
        raise ValueError(f"input {t.name!r} has shape {t.shape}; export supports "
                         "(N, C, H, W) images with a fixed C")
