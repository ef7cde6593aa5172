"""AOTInductor: torch.export + torch._inductor.aoti_compile_and_package -> one `.pt2` package.

The package holds the compiled model and its weights; `load_aoti` runs it without the model's
Python code. The batch dimension is dynamic within the exported [min, max] range; H and W are
fixed at export time (one package per image size). The additive model's `strength` attribute is
read at export time and baked into the package as a constant.

Inputs and outputs: the module is exported through `wrap.Positional`, so the package takes its
inputs positionally and returns a tuple, both in the spec's order (torch.export cannot give
dynamic shapes to a forward(**inputs), which the masked variant's wrapper has); `load_aoti`
turns both back into names. Packages exported with keyword inputs (no "call" in their metadata)
are still called by keyword, and a dict they return is read by name.

The compiled code does not check its inputs (AOTInductor checks only when AOTI_RUNTIME_CHECK_INPUTS
is set in the environment): a batch outside the range or another image size would be read with
the wrong strides or out of bounds (a channels_last input gives garbage: max error 2.0). So the
package records its range and size in its metadata, and the function `load_aoti` returns checks
every call against them and makes inputs contiguous first.

CPU packages are compiled with -march=native and for torch.get_num_threads() OpenMP threads at
export time (the count is in the manifest): export on the kind of machine that will serve, with
the thread count it will use.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor
from torch import Tensor, nn

from ..models.spec import ModelSpec
from .wrap import Positional, check_shared_dims, example_inputs

METADATA_KEY = "i2i"        # the package metadata entry that holds our JSON facts


def export_aoti(module: nn.Module, spec: ModelSpec, path: Path, batch: tuple[int, int, int],
                size: tuple[int, int], device: str = "cpu") -> dict:
    """Compile `module` into the AOTInductor package `path`; returns the manifest facts.

    batch = (min, opt, max): the package accepts any batch in [min, max]; opt is the example
    batch traced. size = (H, W), fixed. The caller's module is left as it was (a copy is put in
    eval mode and moved to `device`; dropout kept on by pix2pix's keep_dropout() is switched off:
    a package is deterministic).
    """
    low, opt, high = _check_batch(batch)
    height, width = size
    spec.check_size(height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    model = copy.deepcopy(module).to(device).eval()
    # torch.export specialises any dimension whose example size is 0 or 1 to that constant, so
    # the example batch must be >= 2 for the batch to stay dynamic (min may still be 1).
    example = min(max(opt, 2), high)
    inputs = example_inputs(spec, example, size, device=device)
    dynamic = low < high
    if dynamic:
        dim = torch.export.Dim("batch", min=low, max=high)
        shapes = (tuple({0: dim} for _ in inputs),)          # forward(*inputs)
    else:
        shapes = None                         # min == max: a static batch, traced as is
    with torch.no_grad(), warnings.catch_warnings():
        # torch's own pytree code warns about its own deprecated LeafSpec; nothing to act on.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
        program = torch.export.export(Positional(model, spec).eval(), tuple(inputs.values()),
                                      dynamic_shapes=shapes)

    facts = {"inputs": [t.name for t in spec.inputs], "outputs": [t.name for t in spec.outputs],
             "batch": [low, opt, high], "size": [height, width], "device": device,
             "call": "positional"}
    torch._inductor.aoti_compile_and_package(
        program, package_path=str(path),
        inductor_configs={"aot_inductor.metadata": {METADATA_KEY: json.dumps(facts)}})
    return {"device": device, "torch": torch.__version__, "batch": [low, opt, high],
            "size": [height, width], "dynamic": ["batch"] if dynamic else [],
            # CPU kernels are compiled for this many OpenMP threads (torch.get_num_threads()).
            "threads": torch.get_num_threads()}


def load_aoti(path: Path, spec: ModelSpec, device: str = "cpu"
              ) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """A function from {input name: tensor} to {output name: tensor} that runs the package.

    Raises FileNotFoundError for a missing file and RuntimeError for a file that is not a
    loadable package, or one exported for other inputs and outputs than `spec` names.
    """
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


def _check_batch(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    low, opt, high = batch
    if not 1 <= low <= opt <= high:
        raise ValueError(f"batch range {tuple(batch)} must satisfy 1 <= min <= opt <= max")
    return low, opt, high


def _check_inputs(inputs: dict[str, Tensor], spec: ModelSpec, batch: tuple[int, int],
                  size: tuple[int, ...], device: torch.device, path: Path) -> None:
    """ValueError unless every input fits what the package was compiled for."""
    names = [t.name for t in spec.inputs]
    if sorted(inputs) != sorted(names):
        raise ValueError(f"inputs {sorted(inputs)} do not match the model's inputs {names}")
    for t in spec.inputs:
        x = inputs[t.name]
        if x.dim() != 4 or x.shape[1] != t.shape[1] or tuple(x.shape[2:]) != size:
            raise ValueError(f"input {t.name!r} has shape {tuple(x.shape)}; {path} takes "
                             f"(N, {t.shape[1]}, {size[0]}, {size[1]}) (H and W are fixed at "
                             "export: re-export for another size)")
        if not batch[0] <= x.shape[0] <= batch[1]:
            raise ValueError(f"batch {x.shape[0]} is outside the range [{batch[0]}, {batch[1]}] "
                             f"that {path} was exported for; split the batch or re-export "
                             "with a larger max")
        if x.dtype != getattr(torch, t.dtype) or x.device.type != device.type:
            raise ValueError(f"input {t.name!r} is {x.dtype} on {x.device}; {path} takes "
                             f"{t.dtype} on {device}")
    check_shared_dims(inputs, path)        # one batch for all: the kernels read every input with it
