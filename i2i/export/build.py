"""build(checkpoint, options) -> export directory: every artifact, each parity-gated, and its
manifest. i2i-export (cli.py) is a thin layer over this."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models import get_entry, load, read_document
from ..models.checkpoint import CheckpointError
from . import parity
from .manifest import FORMAT, FORMAT_VERSION, sha256, tool_versions, write_manifest
from .to_onnx import OPSET, export_onnx, onnx_runner, to_fp16

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
    inputs = parity.parity_inputs(spec, data, size, batch=min(2, options.batch[2]))
    reference = parity.eager_runner(module)
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
    failures: list[str] = []

    def gate(key: str, facts: dict, runner, precision: str) -> None:
        figures = parity.compare(reference, runner, inputs)
        passed, worst = parity.verdict(figures, precision)
        facts.update({"precision": precision, "parity": figures, "passed": passed})
        manifest["artifacts"][key] = facts
        options.log(f"  {key:10s} {'ok  ' if passed else 'MISS'} {worst}")
        if not passed:
            failures.append(f"{key} {worst}")

    options.log(f"exporting {name} from {checkpoint} at {size[0]}x{size[1]}, batch "
                f"{options.batch[0]}..{options.batch[2]} -> {out}")
    if "onnx" in formats or "triton" in formats or "trt" in formats:
        facts = export_onnx(module, spec, out / "model.onnx", options.batch, size,
                            options.dynamic_size, options.opset)
        gate("onnx", {"file": "model.onnx", **facts}, onnx_runner(out / "model.onnx"), "fp32")
        if options.fp16 or "trt" in formats:
            facts = to_fp16(out / "model.onnx", out / "model.fp16.onnx", options.fp16_io)
            gate("onnx_fp16", {"file": "model.fp16.onnx", **facts},
                 onnx_runner(out / "model.fp16.onnx"), "fp16")
    if "trt" in formats:
        _tensorrt(out, spec, size, options, manifest)
    if "aoti" in formats:
        from .aoti import export_aoti, load_aoti
        device = "cuda" if torch.cuda.is_available() else "cpu"
        facts = export_aoti(module, spec, out / "model.pt2", options.batch, size, device)
        gate("aoti", {"file": "model.pt2", **facts}, load_aoti(out / "model.pt2", spec, device),
             "fp32")
    if "triton" in formats:
        manifest["artifacts"]["triton"] = _triton(out, name, options, manifest)
    if failures:
        manifest["parity_failures"] = failures
    write_manifest(out / "manifest.json", manifest)
    if failures and not options.allow_parity_failure:
        raise ParityError("parity check failed: " + "; ".join(failures) +
                          " (recorded in the manifest; --allow-parity-failure keeps the "
                          "artifacts)")
    return out


def _tensorrt(out: Path, spec, size, options: ExportOptions, manifest: dict) -> None:
    from .tensorrt import availability, build_engine
    reason = availability()
    if reason is not None:
        manifest["artifacts"]["tensorrt"] = {"skipped": reason}
        options.log(f"  tensorrt   skipped: {reason}")
        return
    lo, opt, hi = options.batch
    shapes = {t.name: ((lo, spec.channels, *size), (opt, spec.channels, *size),
                       (hi, spec.channels, *size)) for t in spec.inputs}
    facts = build_engine(out / "model.fp16.onnx", out / "model.plan", shapes,
                         timing_cache=out / "timing.cache")
    manifest["artifacts"]["tensorrt"] = {"file": "model.plan", "precision": "fp16", **facts}
    options.log(f"  tensorrt   built with TensorRT {facts.get('tensorrt')} (parity is checked "
                "by the runtime's engine test on the GPU)")


def _triton(out: Path, name: str, options: ExportOptions, manifest: dict) -> dict:
    from .triton_repo import io_from_onnx, write_repository
    use_fp16 = options.fp16 and (out / "model.fp16.onnx").exists()
    source = out / ("model.fp16.onnx" if use_fp16 else "model.onnx")
    inputs, outputs = io_from_onnx(source)
    plan = out / "model.plan" if (out / "model.plan").exists() else None
    shutil.rmtree(out / "triton", ignore_errors=True)    # no stale <model>_trt from an old run
    folders = write_repository(out / "triton", name, inputs, outputs, source, plan,
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
