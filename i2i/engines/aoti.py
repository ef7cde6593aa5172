"""aoti: an AOTInductor package (model.pt2, written by i2i.export.aoti) run without the model's
Python code.

The batch dimension is dynamic within the exported [min, max] range; H and W are fixed at export
(one package per image size). The package takes its inputs positionally and returns a tuple,
both in the signature's order; `load_aoti` turns both back into names. Packages exported with
keyword inputs (no "call" in their metadata) are still called by keyword.

The compiled code does not check its inputs (AOTInductor checks only when
AOTI_RUNTIME_CHECK_INPUTS is set): a batch outside the range or another image size would be read
with the wrong strides or out of bounds (a channels_last input gives garbage: max error 2.0). So
the package records its range and size in its metadata, and `load_aoti`'s function checks every
call against them and makes inputs contiguous first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..models.spec import ModelSpec
from .base import Batch, EngineSpec, check_batch, check_shared_dims, to_host

METADATA_KEY = "i2i"        # the package metadata entry that holds our JSON facts
Runner = Callable[[dict[str, Tensor]], dict[str, Tensor]]


class AotiEngine:
    """model.pt2 (and model.<signature>.pt2): fixed H and W, batch within the exported range."""

    name = "aoti"
    artifacts = {"fp32": ("aoti", ".pt2", "--formats aoti")}

    def __init__(self, files: dict[str, Path], spec: EngineSpec):
        self.spec = spec
        self.device = torch.device(spec.device)
        self._runs = {label: load_aoti(path, spec.signatures[label], spec.device)
                      for label, path in files.items()}

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        label = self.spec.signature(batch)
        out = self._runs[label]({k: v.to(self.device, torch.float32).contiguous()
                                 for k, v in batch.items()})
        return {t.name: to_host(out[t.name]) for t in self.spec.signatures[label].outputs}


def load_aoti(path: Path, spec: ModelSpec, device: str = "cpu") -> Runner:
    """A function from {input name: tensor} to {output name: tensor} that runs the package.

    Raises FileNotFoundError for a missing file and RuntimeError for a file that is not a
    loadable package, or one exported for other inputs and outputs than `spec` names.
    """
    import torch._inductor  # slow to import: only where a package is opened

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AOTInductor package {path} not found; re-export it with "
                                "i2i.export.aoti.export_aoti")
    index = torch.device(device).index
    try:
        compiled = torch._inductor.aoti_load_package(
            str(path), device_index=-1 if index is None else index)
        facts = json.loads(compiled.get_metadata()[METADATA_KEY])
    except Exception as err:                 # torch raises RuntimeError, KeyError, zip errors...
        raise RuntimeError(f"{path} is not a loadable AOTInductor package written by i2i "
                           f"({type(err).__name__}: {err}); re-export it with "
                           f"torch {torch.__version__}") from err
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    if facts["inputs"] != names_in or facts["outputs"] != names_out:
        raise RuntimeError(f"{path} was exported for inputs {facts['inputs']} -> outputs "
                           f"{facts['outputs']}, but the model's spec names {names_in} -> "
                           f"{names_out}; re-export it for this model")
    low, _, high = facts["batch"]
    size = tuple(facts["size"])
    target = torch.device(device)
    positional = facts.get("call") == "positional"

    def run(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        _check_inputs(inputs, spec, (low, high), size, target, path)
        # The compiled kernels assume the contiguous strides of the traced example.
        ordered = [inputs[name].contiguous() for name in names_in]
        out = compiled(*ordered) if positional else compiled(**dict(zip(names_in, ordered,
                                                                        strict=True)))
        if isinstance(out, dict):
            return {name: out[name] for name in names_out}
        return dict(zip(names_out, out, strict=True))   # tuple or list in spec order

    return run


def _check_inputs(inputs: dict[str, Tensor], spec: ModelSpec, batch: tuple[int, int],
                  size: tuple[int, ...], device: torch.device, path: Path) -> None:
    """ValueError unless every input fits what the package was compiled for."""
    names = [t.name for t in spec.inputs]
    if sorted(inputs) != sorted(names):
        raise ValueError(f"inputs {sorted(inputs)} do not match the model's inputs {names}")
    for t in spec.inputs:
        x = inputs[t.name]
        want = (t.shape[1], *size) if t.spatial else tuple(t.shape[1:])
        if x.dim() != len(t.shape) or tuple(x.shape[1:]) != want:
            shown = ", ".join(str(d) for d in want)
            raise ValueError(f"input {t.name!r} has shape {tuple(x.shape)}; {path} takes "
                             f"(N, {shown}) (H and W are fixed at export: re-export for "
                             "another size)")
        if not batch[0] <= x.shape[0] <= batch[1]:
            raise ValueError(f"batch {x.shape[0]} is outside the range [{batch[0]}, {batch[1]}] "
                             f"that {path} was exported for; split the batch or re-export "
                             "with a larger max")
        if x.dtype != getattr(torch, t.dtype) or x.device.type != device.type:
            raise ValueError(f"input {t.name!r} is {x.dtype} on {x.device}; {path} takes "
                             f"{t.dtype} on {device}")
    check_shared_dims(inputs, path)        # one batch for all: the kernels read every input with it
