"""AOTInductor: torch.export + torch._inductor.aoti_compile_and_package -> one `.pt2` package.

The package holds the compiled model and its weights; i2i.engines.aoti runs it without the model's
Python code. The batch dimension is dynamic within the exported [min, max] range; H and W are
fixed at export time (one package per image size). The additive model's `strength` attribute is
read at export time and baked into the package as a constant.

Inputs and outputs: each signature is exported through `wrap.Positional`, so the package takes
its inputs positionally and returns a tuple, both in the signature's order (torch.export cannot
give dynamic shapes to keyword inputs). The package records its inputs, outputs, batch range and
size in its metadata; i2i.engines.aoti opens it, checks every call against them and turns the
tuple back into names.

CPU packages are compiled with -march=native and for torch.get_num_threads() OpenMP threads at
export time (the count is in the manifest): export on the kind of machine that will serve, with
the thread count it will use.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
import torch._inductor
from torch import nn

from ..engines.aoti import METADATA_KEY
from ..models.spec import ModelSpec
from .wrap import Positional, check_batch_range, example_inputs


def export_aoti(module: nn.Module, spec: ModelSpec, path: Path, batch: tuple[int, int, int],
                size: tuple[int, int], device: str = "cpu") -> dict:
    """Compile `module` into the AOTInductor package `path`; returns the manifest facts.

    batch = (min, opt, max): the package accepts any batch in [min, max]; opt is the example
    batch traced. size = (H, W), fixed. The caller's module is left as it was (a copy is put in
    eval mode and moved to `device`; dropout kept on by pix2pix's keep_dropout() is switched off:
    a package is deterministic).
    """
    low, opt, high = check_batch_range(batch)
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
