"""build(checkpoint, options) -> export directory: every signature's artifacts, each gated for
parity through the engine class that serves it, and their manifest. i2i-export (cli.py) is a
thin layer over this.

For each signature of the model (i2i.models.spec: `default`, and e.g. LOMIT's `masked`) the
formats asked for are written under the signature's stem (model.onnx, model.masked.onnx, ...;
i2i.manifest), and each artifact is opened by the engine class i2i-serve would open it with
(onnxruntime, aoti, tensorrt) and run on the same batches as eager fp32 PyTorch.

`direction` picks which generator of a cycle run is exported: given a run's A -> B checkpoint,
BtoA exports its B -> A sibling (i2i/runs.py), into exports/<model>_BtoA by default; the
manifest records the exported checkpoint's meta["direction"].
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engines import ENGINES, EngineSpec
from ..manifest import (
    FORMAT,
    FORMAT_VERSION,
    sha256,
    stem,
    tool_versions,
    triton_name,
    write_manifest,
)
from ..models import get_entry, load, read_document, signatures
from ..models.checkpoint import CheckpointError
from ..models.spec import ModelSpec
from ..runs import DIRECTIONS, ONE_WAY, parse_name, sibling
from . import parity
from .to_onnx import OPSET, export_onnx, to_fp16
from .wrap import check_batch_range

FORMATS = ("onnx", "trt", "aoti", "triton")
DEFAULT_FORMATS = ("onnx", "aoti", "triton")


class ParityError(RuntimeError):
    """An artifact missed its parity threshold (and --allow-parity-failure was not given)."""


@dataclass
class ExportOptions:
    out: Path | None = None                       # default exports/<model>
    formats: tuple[str, ...] = DEFAULT_FORMATS
    fp16: bool = False
    fp16_io: bool = False
    batch: tuple[int, int, int] = (1, 8, 32)      # min, opt, max
    size: tuple[int, int] | None = None           # default: the training size, else 256
    dynamic_size: bool = True
    allow_parity_failure: bool = False
    opset: int = OPSET
    model: str | None = None                      # if given, must match the checkpoint
    direction: str | None = None                  # AtoB | BtoA; None: the checkpoint's own
    log: object = print


@dataclass
class _Graph:
    """One signature being exported."""

    label: str                          # the signature: "default", "masked", ...
    module: nn.Module                   # the fp32 module; the signature names its method
    spec: ModelSpec
    parity_batches: list[dict[str, torch.Tensor]]
    artifacts: dict                     # where its manifest entries go

    @property
    def stem(self) -> str:
        return stem(self.label)


class _Gate:
    """Runs one artifact through its serving engine against eager and records the verdict."""

    def __init__(self, model: str, size: tuple[int, int], options: ExportOptions,
                 size_multiple: int):
        self.model, self.size, self.options = model, size, options
        self.size_multiple = size_multiple
        self.failures: list[str] = []

    def __call__(self, graph: _Graph, key: str, facts: dict, engine: str, path: Path,
                 precision: str, device: str = "cpu", fixed: bool = True) -> None:
        spec = EngineSpec(self.model, {graph.label: graph.spec}, self.options.batch[2],
                          self.size if fixed else None, self.size_multiple, self.size,
                          precision, device)
        served = ENGINES[engine]({graph.label: path}, spec)
        figures = parity.compare(parity.eager_runner(graph.module, graph.spec), served.run,
                                 graph.parity_batches)
        passed, worst = parity.verdict(figures, precision)
        facts.update({"precision": precision, "sha256": sha256(path), "parity": figures,
                      "passed": passed})
        graph.artifacts[key] = facts
        label = key if graph.label == "default" else f"{graph.label} {key}"
        self.options.log(f"  {label:18s} {'ok  ' if passed else 'MISS'} {worst} ({engine})")
        if not passed:
            self.failures.append(f"{label} {worst}")


def build(checkpoint: Path, options: ExportOptions) -> Path:
    checkpoint = Path(checkpoint)
    name = read_document(checkpoint)["model"]
    if options.model is not None and options.model != name:
        get_entry(options.model)
        raise CheckpointError(f"{checkpoint} is a {name!r} checkpoint, not {options.model!r}")
    checkpoint = directed_checkpoint(checkpoint, options.direction)
    document = read_document(checkpoint)
    direction = document.get("meta", {}).get("direction")
    module, spec = load(checkpoint)
    size = options.size or _training_size(document)
    spec.check_size(*size)
    check_batch_range(options.batch)
    formats = _resolve_formats(options)
    out = Path(options.out or Path("exports") / (name if direction in (None, "AtoB")
                                                   else f"{name}_{direction}"))
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": name,
        "config": document["config"],
        "checkpoint": {"file": checkpoint.name, "sha256": sha256(checkpoint),
                       "step": document.get("step"), "direction": direction},
        "batch": dict(zip(("min", "opt", "max"), options.batch, strict=True)),
        "size": list(size), "size_multiple": spec.size_multiple, "opset": options.opset,
        "versions": tool_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
        "signatures": {}}
    data = document.get("meta", {}).get("data", {})
    batch = min(2, options.batch[2])
    graphs = []
    for label, signature in signatures(module).items():
        entry = {**signature.to_dict(), "artifacts": {}}
        manifest["signatures"][label] = entry
        batches = parity.parity_inputs(signature, data, size, batch, parity.MASK_SCHEMES,
                                       source=(direction or "AtoB")[0])
        graphs.append(_Graph(label, module, signature, batches, entry["artifacts"]))
    gate = _Gate(name, size, options, spec.size_multiple)

    options.log(f"exporting {name} ({direction or 'direction not recorded'}) from {checkpoint} "
                f"at {size[0]}x{size[1]}, batch {options.batch[0]}..{options.batch[2]} -> {out} "
                f"(signatures: {', '.join(g.label for g in graphs)})")
    for graph in graphs:
        if {"onnx", "triton", "trt"} & set(formats):
            _onnx(graph, out, options, size, options.fp16 or "trt" in formats, gate)
        if "trt" in formats:
            _tensorrt(graph, out, size, options, gate)
        if "aoti" in formats:
            _aoti(graph, out, size, options, gate)
    if "triton" in formats:
        shutil.rmtree(out / "triton", ignore_errors=True)   # no stale <model>_trt from an old run
        for graph in graphs:
            graph.artifacts["triton"] = _triton(out, name, graph, options)
        manifest["triton"] = _pictures(out, name, graphs, options)
    if gate.failures:
        manifest["parity_failures"] = gate.failures
    write_manifest(out / "manifest.json", manifest)
    if gate.failures and not options.allow_parity_failure:
        raise ParityError("parity check failed: " + "; ".join(gate.failures) +
                          " (recorded in the manifest; --allow-parity-failure keeps the "
                          "artifacts)")
    return out


def _onnx(graph: _Graph, out: Path, options: ExportOptions, size: tuple[int, int], fp16: bool,
          gate: _Gate) -> None:
    """<stem>.onnx and, with fp16, <stem>.fp16.onnx, each through the onnxruntime engine."""
    fp32_path, fp16_path = out / f"{graph.stem}.onnx", out / f"{graph.stem}.fp16.onnx"
    facts = export_onnx(graph.module, graph.spec, fp32_path, options.batch, size,
                        options.dynamic_size, options.opset)
    fixed = not options.dynamic_size
    gate(graph, "onnx", {"file": fp32_path.name, **facts}, "onnxruntime", fp32_path, "fp32",
         fixed=fixed)
    if fp16:
        facts = to_fp16(fp32_path, fp16_path, options.fp16_io)
        gate(graph, "onnx_fp16", {"file": fp16_path.name, **facts}, "onnxruntime", fp16_path,
             "fp16", fixed=fixed)


def _aoti(graph: _Graph, out: Path, size: tuple[int, int], options: ExportOptions,
          gate: _Gate) -> None:
    from .aoti import export_aoti

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = out / f"{graph.stem}.pt2"
    facts = export_aoti(graph.module, graph.spec, path, options.batch, size, device)
    gate(graph, "aoti", {"file": path.name, **facts}, "aoti", path, "fp32",
         "cpu" if device == "cpu" else "cuda:0")


def _tensorrt(graph: _Graph, out: Path, size: tuple[int, int], options: ExportOptions,
              gate: _Gate) -> None:
    """<stem>.plan from <stem>.fp16.onnx, gated through the tensorrt engine on the GPU."""
    from .tensorrt import availability, build_engine

    reason = availability()
    if reason is not None:
        graph.artifacts["tensorrt"] = {"skipped": reason}
        options.log(f"  tensorrt           skipped: {reason}")
        return
    lo, opt, hi = options.batch
    shapes = {t.name: tuple((n, *t.shape[1:]) if not t.spatial else (n, t.channels, *size)
                            for n in (lo, opt, hi)) for t in graph.spec.inputs}
    plan = out / f"{graph.stem}.plan"
    facts = build_engine(out / f"{graph.stem}.fp16.onnx", plan, shapes,
                         timing_cache=out / "timing.cache")
    gate(graph, "tensorrt", {"file": plan.name, **facts}, "tensorrt", plan, "fp16", "cuda:0")


def _triton(out: Path, name: str, graph: _Graph, options: ExportOptions) -> dict:
    """triton/<name>[_<signature>]/ (and its _trt/ model where a plan was built) from the
    signature's fp16 ONNX file when --fp16 wrote one, else its fp32 file."""
    from .triton_repo import io_from_onnx, write_repository
    folder = triton_name(name, graph.label)
    fp16 = out / f"{graph.stem}.fp16.onnx"
    source = fp16 if options.fp16 and fp16.exists() else out / f"{graph.stem}.onnx"
    inputs, outputs = io_from_onnx(source)
    plan = out / f"{graph.stem}.plan"
    folders = write_repository(out / "triton", folder, inputs, outputs, source,
                               plan if plan.exists() else None, max_batch_size=options.batch[2])
    options.log(f"  triton     repository {out / 'triton'} ({', '.join(f.name for f in folders)})")
    return {"repository": "triton", "models": [f.name for f in folders],
            "onnx": source.name, "max_batch_size": options.batch[2]}


def _pictures(out: Path, name: str, graphs: list[_Graph], options: ExportOptions) -> dict:
    """triton/<name>_pictures/: the Python-backend model that takes encoded pictures of every
    signature (the default signature's images required) and answers PNG."""
    from .triton_repo import write_pictures_model
    pictures = [t.name for g in graphs for t in g.spec.inputs if t.kind in ("image", "mask")]
    required = [t.name for t in graphs[0].spec.of_kind("image")]
    optional = [n for n in dict.fromkeys(pictures) if n not in required]
    folder = write_pictures_model(out / "triton", name, required, optional, options.batch[2])
    options.log(f"  triton     pictures model {folder.name} (Python backend)")
    return {"repository": "triton", "pictures": folder.name}


def _resolve_formats(options: ExportOptions) -> tuple[str, ...]:
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
    return tuple(options.formats)


def _training_size(document: dict) -> tuple[int, int]:
    size = document.get("meta", {}).get("training", {}).get("size")
    return (int(size), int(size)) if size else (256, 256)


def find_checkpoint(runs: Path, model: str) -> Path:
    """The newest A -> B checkpoint (by modification time) of `model` under `runs`."""
    get_entry(model)
    found = []
    for path in Path(runs).glob("**/checkpoints/step_*.safetensors"):
        if (parse_name(path.name) or (0, "AtoB"))[1] != "AtoB":     # a state or a B -> A file
            continue
        try:
            if read_document(path).get("model") == model:
                found.append(path)
        except CheckpointError:
            continue
    if not found:
        raise CheckpointError(
            f"no {model} checkpoint under {runs}/; train one first, e.g. "
            f"i2i-train --model {model} --out {runs}/{model} (or `make demo`), or pass "
            "--checkpoint PATH")
    return max(found, key=lambda p: (p.stat().st_mtime, p.name))


def directed_checkpoint(checkpoint: Path, direction: str | None) -> Path:
    """The checkpoint that translates `direction`: `checkpoint` itself when its meta says so (or
    direction is None), else, for BtoA, its run's B -> A sibling; CheckpointError saying why
    there is none."""
    if direction is None:
        return checkpoint
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    document = read_document(checkpoint)
    meta = document.get("meta", {})
    have = meta.get("direction")
    if have == direction or (have is None and direction == "AtoB"):
        return checkpoint
    if direction == "AtoB":
        forward = sibling(checkpoint, "AtoB")
        then = (f"pass its run's A -> B checkpoint {forward}" if forward not in (None, checkpoint)
                else "pass an A -> B checkpoint")
        raise CheckpointError(f"{checkpoint} is a B -> A generator (its meta says direction "
                              f"BtoA) and --direction AtoB was asked: export it with "
                              f"--direction BtoA, or {then}")
    model = document["model"]
    reason = ONE_WAY.get((model, bool(meta.get("supervised"))))
    if reason:
        raise CheckpointError(f"{checkpoint}: a {model} run has no B -> A generator to export: "
                              f"{reason}")
    reverse = sibling(checkpoint, "BtoA")
    if reverse is None:
        raise CheckpointError(f"{checkpoint} is not named as a run's checkpoint "
                              "(step_N.safetensors), so there is no B -> A checkpoint beside it "
                              "to find: pass the B -> A generator's own checkpoint with "
                              "--checkpoint")
    if not reverse.is_file():
        raise CheckpointError(f"no B -> A checkpoint {reverse.name} beside {checkpoint}: runs of "
                              "an older i2i wrote only A -> B checkpoints; `i2i-train --resume "
                              "--out RUN` writes the B -> A checkpoint of the run's newest step "
                              "from its training state")
    theirs = read_document(reverse)
    if (theirs.get("model"), theirs.get("step"), theirs.get("meta", {}).get("direction")) != (
            model, document.get("step"), "BtoA"):
        raise CheckpointError(f"{reverse} is not the B -> A generator of {checkpoint} (its "
                              f"model, step or direction differ: {theirs.get('model')!r}, step "
                              f"{theirs.get('step')}, {theirs.get('meta', {}).get('direction')!r})")
    return reverse
