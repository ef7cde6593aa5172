"""build(checkpoint, options) -> export directory: every signature's artifacts, each gated for
parity through the engine class that serves it, and their manifest. i2i-export (cli.py) is a
thin layer over this.

For each signature of the model (i2i.models.spec: `default`, and e.g. LOMIT's `masked`) the
formats asked for are written under the signature's stem (model.onnx, model.masked.onnx, ...;
i2i.manifest), and each artifact is opened by the engine class i2i-serve would open it with
(onnxruntime, openvino, aoti, tensorrt) and run on the same batches as eager fp32 PyTorch.

Precisions are export products, each judged by its own threshold (parity.thresholds):

    precision  onnxruntime (onnx)   openvino              tensorrt (trt)
    fp32       model.onnx           model.onnx            -
    fp16       model.fp16.onnx      -                     model.plan
    bf16       -                    model.onnx, bf16      -
    int8       model.int8.onnx      model.int8.openvino   model.int8.plan
                                    .onnx

fp32 is always written (every other graph derives from it); int8 is calibrated on the model's
own domain (i2i.export.calibration) and recorded with its method and image count. OpenVINO's
int8 graph places its quantization differently from the one onnxruntime and TensorRT share
(i2i.export.quantize.LAYOUTS says why).

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

from ..manifest import (
    FORMAT,
    FORMAT_VERSION,
    sha256,
    tool_versions,
    triton_name,
    write_manifest,
)
from ..models import get_entry, load, read_document, signatures
from ..models.checkpoint import CheckpointError
from ..runs import DIRECTIONS, ONE_WAY_BEFORE_META, parse_name, sibling
from . import parity
from .calibration import DEFAULT_COUNT, Calibration, calibration_images
from .gate import Gate, Graph
from .to_onnx import OPSET, export_onnx, to_fp16
from .wrap import check_batch_range

FORMATS = ("onnx", "openvino", "trt", "aoti", "triton")
DEFAULT_FORMATS = ("onnx", "aoti", "triton")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ONNX_FORMATS = {"onnx", "openvino", "trt", "triton"}     # the formats that start from model.onnx


class ParityError(RuntimeError):
    """An artifact missed its parity threshold (and --allow-parity-failure was not given)."""


@dataclass
class ExportOptions:
    out: Path | None = None                       # default exports/<model>
    formats: tuple[str, ...] = DEFAULT_FORMATS
    fp16: bool = False                            # the same as "fp16" in precisions
    fp16_io: bool = False
    precisions: tuple[str, ...] = ("fp32",)       # of PRECISIONS; fp32 is always written
    calibration: str | None = None                # int8: a folder or synthetic:TASK (default:
    calibration_count: int = DEFAULT_COUNT        # the checkpoint's own data)
    batch: tuple[int, int, int] = (1, 8, 32)      # min, opt, max
    size: tuple[int, int] | None = None           # default: the training size, else 256
    dynamic_size: bool = True
    allow_parity_failure: bool = False
    opset: int = OPSET
    model: str | None = None                      # if given, must match the checkpoint
    direction: str | None = None                  # AtoB | BtoA; None: the checkpoint's own
    log: object = print


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
    precisions = _resolve_precisions(options, formats)
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
        domain = parity.domain_batches(signature, data, size, batch, parity.MASK_SCHEMES,
                                       source=(direction or "AtoB")[0])
        graphs.append(Graph(label, module, signature, batches, entry["artifacts"], domain,
                            parity.random_batches(signature, size, batch)))
    calibration = None
    if "int8" in precisions:
        images = max(len(g.spec.of_kind("image")) for g in graphs)
        calibration = calibration_images(options.calibration, data, size,
                                         options.calibration_count, (direction or "AtoB")[0],
                                         skip=batch * max(images, 1))
        manifest["calibration"] = {**calibration.describe(),
                                   "method": _int8_method("openvino" in formats)}
        for graph in graphs:
            graph.domain_batches = graph.domain_batches or _held_out(graph, calibration, size,
                                                                     batch)
    gate = Gate(name, size, options.batch, spec.size_multiple, options.log)

    options.log(f"exporting {name} ({direction or 'direction not recorded'}) from {checkpoint} "
                f"at {size[0]}x{size[1]}, batch {options.batch[0]}..{options.batch[2]} -> {out} "
                f"(signatures: {', '.join(g.label for g in graphs)})")
    for graph in graphs:
        if ONNX_FORMATS & set(formats):
            _onnx(graph, out, options, size, "fp16" in precisions or "trt" in formats, gate)
        # int8: the signature's calibration batches, which both int8 graphs are quantized on
        batches = calibration.batches(graph.spec, size) if calibration else []
        if "int8" in precisions:
            _int8(graph, out, options, calibration, batches, gate)
        if "openvino" in formats:
            _openvino(graph, out, precisions, gate, not options.dynamic_size, calibration,
                      batches)
        if "trt" in formats:
            _tensorrt(graph, out, size, options, gate, precisions)
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


def _onnx(graph: Graph, out: Path, options: ExportOptions, size: tuple[int, int], fp16: bool,
          gate: Gate) -> None:
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


def _int8(graph: Graph, out: Path, options: ExportOptions, calibration: Calibration,
          batches: list[dict[str, torch.Tensor]], gate: Gate) -> None:
    """<stem>.int8.onnx from <stem>.onnx, calibrated on the domain, through onnxruntime."""
    from .quantize import LAYOUTS, to_int8

    path = out / f"{graph.stem}{LAYOUTS['onnxruntime'].suffix}"
    facts = to_int8(out / f"{graph.stem}.onnx", path, batches, LAYOUTS["onnxruntime"])
    facts["calibration"] = calibration.describe()
    gate(graph, "onnx_int8", {"file": path.name, **facts}, "onnxruntime", path, "int8",
         fixed=not options.dynamic_size)


def _openvino(graph: Graph, out: Path, precisions: tuple[str, ...], gate: Gate, fixed: bool,
              calibration: Calibration | None, batches: list[dict[str, torch.Tensor]]
              ) -> None:
    """The OpenVINO runtime on the ONNX graphs: fp32, and bf16 and int8 where asked for
    (bf16 only where this CPU has it: skipped with the reason elsewhere). int8 is its own
    graph, <stem>.int8.openvino.onnx, quantized here on `batches`."""
    from ..engines.openvino import OpenVinoEngine, bf16_support
    from .quantize import LAYOUTS, to_int8

    for precision in ("fp32", "bf16", "int8"):
        if precision not in precisions:
            continue
        key, suffix, _ = OpenVinoEngine.artifacts[precision]
        reason = bf16_support() if precision == "bf16" else None
        if reason is not None:
            gate.skip(graph, key, reason)
            continue
        path = out / f"{graph.stem}{suffix}"
        facts = {}
        if precision == "int8":
            facts = {**to_int8(out / f"{graph.stem}.onnx", path, batches, LAYOUTS["openvino"]),
                     "calibration": calibration.describe()}
        gate(graph, key, {"file": path.name, **facts}, "openvino", path, precision, fixed=fixed)


def _int8_method(openvino: bool) -> str:
    """How the int8 graphs of this export are quantized, one line per graph."""
    from .quantize import LAYOUTS
    used = [LAYOUTS["onnxruntime"]] + ([LAYOUTS["openvino"]] if openvino else [])
    return "; ".join(f"model{layout.suffix}: {layout.describe()}" for layout in used)


def _held_out(graph: Graph, calibration: Calibration, size: tuple[int, int], batch: int
              ) -> list[dict[str, torch.Tensor]]:
    """The int8 gate's domain batches where the checkpoint records no data: the images held
    out of calibration, with their mask-scheme variants."""
    first = parity.pool_inputs(graph.spec, calibration.held_out, None, batch, size)
    return [first, *parity.scheme_masked(graph.spec, first, parity.MASK_SCHEMES)]


def _aoti(graph: Graph, out: Path, size: tuple[int, int], options: ExportOptions,
          gate: Gate) -> None:
    from .aoti import export_aoti

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = out / f"{graph.stem}.pt2"
    facts = export_aoti(graph.module, graph.spec, path, options.batch, size, device)
    gate(graph, "aoti", {"file": path.name, **facts}, "aoti", path, "fp32",
         "cpu" if device == "cpu" else "cuda:0")


def _tensorrt(graph: Graph, out: Path, size: tuple[int, int], options: ExportOptions,
              gate: Gate, precisions: tuple[str, ...]) -> None:
    """<stem>.plan from <stem>.fp16.onnx and, with int8, <stem>.int8.plan from the QDQ graph
    <stem>.int8.onnx (explicit quantization), each gated through the tensorrt engine."""
    from ..engines.tensorrt import TensorRTEngine
    from .tensorrt import availability, build_engine

    reason = availability()
    wanted = [p for p in TensorRTEngine.artifacts if p == "fp16" or p in precisions]
    if reason is not None:
        for precision in wanted:
            gate.skip(graph, TensorRTEngine.artifacts[precision][0], reason)
        return
    lo, opt, hi = options.batch
    shapes = {t.name: tuple((n, *t.shape[1:]) if not t.spatial else (n, t.channels, *size)
                            for n in (lo, opt, hi)) for t in graph.spec.inputs}
    for precision in wanted:
        key, suffix, _ = TensorRTEngine.artifacts[precision]
        plan = out / f"{graph.stem}{suffix}"
        source = out / f"{graph.stem}.{precision}.onnx"
        facts = build_engine(source, plan, shapes, timing_cache=out / "timing.cache")
        gate(graph, key, {"file": plan.name, **facts}, "tensorrt", plan, precision, "cuda:0")


def _triton(out: Path, name: str, graph: Graph, options: ExportOptions) -> dict:
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


def _pictures(out: Path, name: str, graphs: list[Graph], options: ExportOptions) -> dict:
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
    if "openvino" in options.formats:
        from ..engines.openvino import availability
        reason = availability()
        if reason is not None:
            raise ValueError(f"format openvino asked for, but {reason} (or pip install "
                             "'i2i[openvino]')")
    return tuple(options.formats)


def _resolve_precisions(options: ExportOptions, formats: tuple[str, ...]) -> tuple[str, ...]:
    """fp32 first, then those asked for (--fp16 adds fp16); ValueError for a precision no
    asked-for format can carry."""
    asked = ("fp32", *options.precisions, *(("fp16",) if options.fp16 else ()))
    unknown = [p for p in asked if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {unknown}; known: {', '.join(PRECISIONS)}")
    precisions = tuple(dict.fromkeys(asked))
    if "bf16" in precisions and "openvino" not in formats:
        raise ValueError("bf16 artifacts run on the openvino engine: add openvino to --formats "
                         "(e.g. --formats onnx,openvino --precision fp32,bf16)")
    if {"fp16", "int8"} & set(precisions) and not ONNX_FORMATS & set(formats):
        raise ValueError("fp16 and int8 artifacts are ONNX graphs: add onnx to --formats")
    return precisions


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
    reason = meta.get("one_way") or ONE_WAY_BEFORE_META.get((model, bool(meta.get("supervised"))))
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
