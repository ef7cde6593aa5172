"""build(checkpoint, options) -> export directory: every artifact, each parity-gated, and its
manifest. i2i-export (cli.py) is a thin layer over this.

A model whose module declares `masked_inputs` (LOMIT: the user mask of translate()) gets a second
graph, the masked variant: model.masked.onnx (+ .fp16.onnx, .pt2) and triton/<model>_masked/,
described under manifest["variants"]["masked"] (see manifest.py).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..models import get_entry, load, read_document
from ..models.checkpoint import CheckpointError
from ..models.spec import ModelSpec
from . import parity
from .manifest import FORMAT, FORMAT_VERSION, sha256, tool_versions, write_manifest
from .to_onnx import OPSET, export_onnx, onnx_runner, to_fp16
from .wrap import Masked, masked_spec

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
    log: object = print


@dataclass
class _Graph:
    """One exported computation: the model's forward, or its masked variant."""

    label: str                          # "" or the variant's name, e.g. "masked"
    stem: str                           # file stem: model -> model.onnx, model.fp16.onnx, ...
    module: nn.Module                   # forward(**inputs) -> {output: tensor}
    spec: ModelSpec
    parity_batches: list[dict[str, torch.Tensor]]
    artifacts: dict                     # where its manifest entries go


def build(checkpoint: Path, options: ExportOptions) -> Path:
    checkpoint = Path(checkpoint)
    document = read_document(checkpoint)
    module, spec = load(checkpoint)
    name = document["model"]
    if options.model is not None and options.model != name:
        get_entry(options.model)
        raise CheckpointError(f"{checkpoint} is a {name!r} checkpoint, not {options.model!r}")
    size = options.size or _training_size(document)
    spec.check_size(*size)
    _check_batch(options.batch)
    out = Path(options.out or Path("exports") / name)
    out.mkdir(parents=True, exist_ok=True)
    formats = _resolve_formats(options)
    data = document.get("meta", {}).get("data", {})
    batch = min(2, options.batch[2])
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": name,
        "config": document["config"],
        "checkpoint": {"file": checkpoint.name, "sha256": sha256(checkpoint),
                       "step": document.get("step")},
        "inputs": [asdict(t) for t in spec.inputs], "outputs": [asdict(t) for t in spec.outputs],
        "batch": dict(zip(("min", "opt", "max"), options.batch, strict=True)),
        "size": list(size), "size_multiple": spec.size_multiple, "opset": options.opset,
        "versions": tool_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
        "artifacts": {}}
    graphs = _graphs(module, spec, data, size, batch, manifest)
    failures: list[str] = []

    def gate(graph: _Graph, key: str, facts: dict, runner, precision: str) -> None:
        figures = parity.compare(parity.eager_runner(graph.module), runner, graph.parity_batches)
        passed, worst = parity.verdict(figures, precision)
        facts.update({"precision": precision, "parity": figures, "passed": passed})
        graph.artifacts[key] = facts
        label = f"{graph.label} {key}".strip()
        options.log(f"  {label:17s} {'ok  ' if passed else 'MISS'} {worst}")
        if not passed:
            failures.append(f"{label} {worst}")

    options.log(f"exporting {name} from {checkpoint} at {size[0]}x{size[1]}, batch "
                f"{options.batch[0]}..{options.batch[2]} -> {out}"
                + (" (and its masked variant)" if len(graphs) > 1 else ""))
    if "onnx" in formats or "triton" in formats or "trt" in formats:
        for graph in graphs:
            fp16 = options.fp16 or ("trt" in formats and not graph.label)
            _onnx(graph, out, options, size, fp16, gate)
    if "trt" in formats:
        _tensorrt(out, spec, size, options, manifest)
    if "aoti" in formats:
        from .aoti import export_aoti, load_aoti
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for graph in graphs:
            path = out / f"{graph.stem}.pt2"
            facts = export_aoti(graph.module, graph.spec, path, options.batch, size, device)
            gate(graph, "aoti", {"file": path.name, **facts},
                 load_aoti(path, graph.spec, device), "fp32")
    if "triton" in formats:
        shutil.rmtree(out / "triton", ignore_errors=True)   # no stale <model>_trt from an old run
        for graph in graphs:
            graph.artifacts["triton"] = _triton(out, name, graph, options)
    if failures:
        manifest["parity_failures"] = failures
    write_manifest(out / "manifest.json", manifest)
    if failures and not options.allow_parity_failure:
        raise ParityError("parity check failed: " + "; ".join(failures) +
                          " (recorded in the manifest; --allow-parity-failure keeps the "
                          "artifacts)")
    return out


def _graphs(module: nn.Module, spec: ModelSpec, data: dict, size: tuple[int, int], batch: int,
            manifest: dict) -> list[_Graph]:
    """The model's graph, and its masked variant's where the module declares `masked_inputs`
    (recorded under manifest["variants"]["masked"])."""
    # A mask among the model's own inputs (required, as Mask CycleGAN's) is also checked with
    # binary scheme masks; the masked variant's optional mask keeps domain regions or uniform
    # values.
    inputs = parity.parity_inputs(spec, data, size, batch, parity.MASK_SCHEMES)
    graphs = [_Graph("", "model", module, spec, inputs, manifest["artifacts"])]
    masked = masked_spec(module, spec)
    if masked is not None:
        entry = {"call": Masked.call, "inputs": [asdict(t) for t in masked.inputs],
                 "outputs": [asdict(t) for t in masked.outputs], "artifacts": {}}
        manifest["variants"] = {"masked": entry}
        graphs.append(_Graph("masked", "model.masked", Masked(module, masked).eval(), masked,
                             parity.parity_inputs(masked, data, size, batch),
                             entry["artifacts"]))
    return graphs


def _onnx(graph: _Graph, out: Path, options: ExportOptions, size: tuple[int, int], fp16: bool,
          gate) -> None:
    """<stem>.onnx and, with fp16, <stem>.fp16.onnx, each through the parity gate."""
    fp32_path, fp16_path = out / f"{graph.stem}.onnx", out / f"{graph.stem}.fp16.onnx"
    facts = export_onnx(graph.module, graph.spec, fp32_path, options.batch, size,
                        options.dynamic_size, options.opset)
    gate(graph, "onnx", {"file": fp32_path.name, **facts}, onnx_runner(fp32_path), "fp32")
    if fp16:
        facts = to_fp16(fp32_path, fp16_path, options.fp16_io)
        gate(graph, "onnx_fp16", {"file": fp16_path.name, **facts}, onnx_runner(fp16_path),
             "fp16")


def _tensorrt(out: Path, spec: ModelSpec, size, options: ExportOptions, manifest: dict) -> None:
    from .tensorrt import availability, build_engine
    reason = availability()
    if reason is not None:
        manifest["artifacts"]["tensorrt"] = {"skipped": reason}
        options.log(f"  tensorrt   skipped: {reason}")
        return
    lo, opt, hi = options.batch
    shapes = {t.name: ((lo, t.shape[1], *size), (opt, t.shape[1], *size),
                       (hi, t.shape[1], *size)) for t in spec.inputs}
    facts = build_engine(out / "model.fp16.onnx", out / "model.plan", shapes,
                         timing_cache=out / "timing.cache")
    manifest["artifacts"]["tensorrt"] = {"file": "model.plan", "precision": "fp16", **facts}
    options.log(f"  tensorrt   built with TensorRT {facts.get('tensorrt')} (parity is checked "
                "by the runtime's engine test on the GPU)")


def _triton(out: Path, name: str, graph: _Graph, options: ExportOptions) -> dict:
    """triton/<name>[_<variant>]/ (and <name>_trt/ for the model's own plan) from the graph's
    fp16 ONNX file when --fp16 wrote one, else its fp32 file."""
    from .triton_repo import io_from_onnx, write_repository
    folder = f"{name}_{graph.label}" if graph.label else name
    fp16 = out / f"{graph.stem}.fp16.onnx"
    source = fp16 if options.fp16 and fp16.exists() else out / f"{graph.stem}.onnx"
    inputs, outputs = io_from_onnx(source)
    plan = out / "model.plan" if not graph.label and (out / "model.plan").exists() else None
    folders = write_repository(out / "triton", folder, inputs, outputs, source, plan,
                               max_batch_size=options.batch[2])
    options.log(f"  triton     repository {out / 'triton'} ({', '.join(f.name for f in folders)})")
    return {"repository": "triton", "models": [f.name for f in folders],
            "onnx": source.name, "max_batch_size": options.batch[2]}


def _resolve_formats(options: ExportOptions) -> tuple[str, ...]:
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
    return tuple(options.formats)


def _check_batch(batch: tuple[int, int, int]) -> None:
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"--batch {lo}:{opt}:{hi} must satisfy 1 <= min <= opt <= max")


def _training_size(document: dict) -> tuple[int, int]:
    size = document.get("meta", {}).get("training", {}).get("size")
    return (int(size), int(size)) if size else (256, 256)


def find_checkpoint(runs: Path, model: str) -> Path:
    """The newest checkpoint (by modification time) of `model` under `runs`."""
    get_entry(model)
    found = []
    for path in Path(runs).glob("**/checkpoints/step_*.safetensors"):
        if path.name.endswith(".train.safetensors"):
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
