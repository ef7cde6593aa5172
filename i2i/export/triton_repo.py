"""Triton Inference Server model repository: config.pbtxt + versioned model files.

Layout written by `write_repository(root, name, ...)`:

    root/<name>/config.pbtxt          platform onnxruntime_onnx
    root/<name>/1/model.onnx          (+ its external-data files, if it has any)
    root/<name>_trt/config.pbtxt      platform tensorrt_plan (only when a plan is given)
    root/<name>_trt/1/model.plan
    root/<model>_pictures/config.pbtxt   backend python (`write_pictures_model`): encoded
    root/<model>_pictures/1/model.py     pictures in, PNG out, as i2i-serve's /v1/translate

Serve it with

    tritonserver --model-repository exports/<model>/triton

and query `<name>` (ONNX Runtime, any machine) or `<name>_trt` (TensorRT) with tensors, or
`<model>_pictures` with PNG/JPEG bytes (its Python stub must import i2i: README "Triton").
A TensorRT plan is tied to the machine that built it: the `<name>_trt` model only loads on a
server with the same TensorRT version as the export machine and a GPU of the same compute
capability (the manifest records both); elsewhere re-export, or serve `<name>`.

config.pbtxt is protobuf text format of Triton's ModelConfig message. It is written by hand
here (it is plain text) so that exporting needs no tritonclient; the tests parse it back with
`tritonclient.grpc.model_config_pb2` to check it against the schema.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}    # numpy name -> Triton enum
ONNX_DTYPES = {"FLOAT": "float32", "FLOAT16": "float16"}          # onnx TensorProto name -> numpy
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class IOTensor:
    """One model input or output as Triton sees it."""

    name: str
    dims: tuple[int, ...]      # WITHOUT the batch dimension, -1 for dynamic: (3, -1, -1)
    dtype: str                 # numpy-style name: "float32" | "float16"


def config_text(name: str, platform: str, inputs: list[IOTensor], outputs: list[IOTensor],
                max_batch_size: int, preferred_batch_sizes: list[int] | None = None,
                max_queue_delay_us: int = 5000, max_queue_size: int = 256,
                queue_timeout_us: int = 30_000_000, instance_kind: str = "KIND_AUTO",
                instance_count: int = 1) -> str:
    """The config.pbtxt text of one model.

    Triton batches requests itself (dynamic_batching) up to max_batch_size along a batch
    dimension that is not listed in `dims`; requests waiting longer than queue_timeout_us, or
    arriving when max_queue_size are already waiting, are rejected rather than left to pile up.
    """
    _check_name(name)
    if platform not in PLATFORMS:
        raise ValueError(f"unknown Triton platform {platform!r}; known: {', '.join(PLATFORMS)}")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"unknown instance kind {instance_kind!r}; known: "
                         f"{', '.join(INSTANCE_KINDS)}")
    _check_positive("max_batch_size", max_batch_size)
    _check_positive("instance_count", instance_count)
    _check_positive("max_queue_size", max_queue_size)
    _check_positive("queue_timeout_us", queue_timeout_us)
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    preferred = list(preferred_batch_sizes or [])
    bad = [b for b in preferred if not 1 <= b <= max_batch_size]
    if bad:
        raise ValueError(f"preferred batch sizes {bad} are outside 1..max_batch_size "
                         f"({max_batch_size}); drop them or raise max_batch_size")
    if not inputs or not outputs:
        raise ValueError(f"model {name!r} needs at least one input and one output "
                         f"(got {len(inputs)} inputs, {len(outputs)} outputs)")
    _check_unique(inputs + outputs)

    lines = [f"name: {_quote(name)}", f"platform: {_quote(platform)}",
             f"max_batch_size: {max_batch_size}"]
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs)
    lines.append("dynamic_batching {")
    if preferred:
        lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]")
    lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}",
              "  default_queue_policy {",
              "    timeout_action: REJECT",
              f"    default_timeout_microseconds: {queue_timeout_us}",
              "    allow_timeout_override: true",
              f"    max_queue_size: {max_queue_size}",
              "  }",
              "}",
              "instance_group [",
              "  {",
              f"    count: {instance_count}",
              f"    kind: {instance_kind}",
              "  }",
              "]"]
    return "\n".join(lines) + "\n"


def write_repository(root: Path, name: str, inputs: list[IOTensor], outputs: list[IOTensor],
                     onnx_path: Path, plan_path: Path | None, max_batch_size: int,
                     plan_io: tuple[list[IOTensor], list[IOTensor]] | None = None,
                     **config_kwargs) -> list[Path]:
    """Write `<name>` (ONNX Runtime) and, given a plan, `<name>_trt` under `root`.

    `plan_io` gives the engine's own inputs/outputs when they differ from the ONNX model's
    (an engine built from an fp16-I/O graph takes float16); by default both share `inputs`
    and `outputs`. The plan's optimisation profile must cover batch sizes up to
    max_batch_size, or Triton refuses to load `<name>_trt`. Extra keyword arguments go to
    config_text. Returns the model folders written.
    """
    root, onnx_path = Path(root), Path(onnx_path)
    _check_name(name)
    _check_positive("max_batch_size", max_batch_size)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist; export it first "
                                f"(i2i-export writes model.onnx)")
    if plan_path is not None and not Path(plan_path).is_file():
        raise FileNotFoundError(f"TensorRT plan {plan_path} does not exist; build it first or "
                                f"pass plan_path=None to write the ONNX model only")
    # Render every config before touching the disk, so a bad argument leaves nothing half-written.
    texts = {name: config_text(name, "onnxruntime_onnx", inputs, outputs, max_batch_size,
                               **config_kwargs)}
    if plan_path is not None:
        plan_inputs, plan_outputs = plan_io or (inputs, outputs)
        texts[f"{name}_trt"] = config_text(f"{name}_trt", "tensorrt_plan", plan_inputs,
                                           plan_outputs, max_batch_size, **config_kwargs)

    extras = _external_data_files(onnx_path)
    folders = [_write_model(root / name, texts[name], onnx_path, "model.onnx")]
    for extra in extras:
        (folders[0] / "1" / extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path.parent / extra, folders[0] / "1" / extra)
    if plan_path is not None:
        folders.append(_write_model(root / f"{name}_trt", texts[f"{name}_trt"],
                                    Path(plan_path), "model.plan"))
    return folders


PICTURE_OUTPUT = "picture"
PICTURES_MODEL_PY = '''"""i2i's pictures model for Triton's Python backend: encoded pictures in,
PNG out, with the decoding, resolution policy and encoding of i2i-serve's /v1/translate. The
stub's Python must import i2i and its engine (README "Triton")."""

from i2i.runtime.triton_python import TritonPythonModel  # noqa: F401
'''


def pictures_config_text(name: str, required: list[str], optional: list[str],
                         max_batch_size: int, engine: str = "onnxruntime",
                         max_queue_delay_us: int = 5000) -> str:
    """config.pbtxt of the Python-backend pictures model: one encoded picture per row of each
    input (TYPE_STRING, dims [1]); `required` the default signature's images, `optional` the
    other picture inputs (a mask file; a scheme in the parameters can fill a mask instead).
    Its engine opens the i2i export two folders up (`export` parameter, relative to the model
    folder: the repository is the export's triton/ folder)."""
    _check_name(name)
    _check_positive("max_batch_size", max_batch_size)
    if not required:
        raise ValueError(f"model {name!r} needs at least one required picture input")
    if PICTURE_OUTPUT in required + optional:
        raise ValueError(f"an input may not be named {PICTURE_OUTPUT!r}: it is the output")
    names = required + optional
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"picture inputs {repeated} are listed more than once")
    entries = [[f"    name: {_quote(n)}", "    data_type: TYPE_STRING", "    dims: [ 1 ]"]
               + (["    optional: true"] if n in optional else []) for n in names]
    lines = [f"name: {_quote(name)}", 'backend: "python"', f"max_batch_size: {max_batch_size}",
             "input ["]
    for i, entry in enumerate(entries):
        lines += ["  {", *entry, "  }" + ("," if i < len(entries) - 1 else "")]
    lines += ["]", "output [", "  {", f"    name: {_quote(PICTURE_OUTPUT)}",
              "    data_type: TYPE_STRING", "    dims: [ 1 ]", "  }", "]",
              "dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}",
              "instance_group [", "  {", "    count: 1", "    kind: KIND_CPU", "  }", "]",
              "parameters [",
              '  { key: "export" value { string_value: "../.." } },',
              f'  {{ key: "engine" value {{ string_value: {_quote(engine)} }} }}',
              "]"]
    return "\n".join(lines) + "\n"


def write_pictures_model(root: Path, model: str, required: list[str], optional: list[str],
                         max_batch_size: int) -> Path:
    """root/<model>_pictures/ (config.pbtxt and 1/model.py); returns the folder."""
    folder = Path(root) / f"{model}_pictures"
    text = pictures_config_text(folder.name, required, optional, max_batch_size)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text(PICTURES_MODEL_PY)
    (folder / "config.pbtxt").write_text(text)
    return folder


def io_from_onnx(onnx_path: Path) -> tuple[list[IOTensor], list[IOTensor]]:
    """The graph's (inputs, outputs) without their batch dimension.

    A symbolic or unknown dimension becomes -1. The first dimension must be dynamic: Triton
    stacks requests along it (max_batch_size > 0), so a graph exported for a fixed batch
    cannot be batched by the server and is rejected here.
    """
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    # Only the graph's signature is needed: leave external weights on disk.
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}   # old exporters list weights as inputs too
    inputs = [_io_tensor(v, onnx_path) for v in graph.input if v.name not in weights]
    outputs = [_io_tensor(v, onnx_path) for v in graph.output]
    return inputs, outputs


def _io_tensor(value, onnx_path: Path) -> IOTensor:
    import onnx

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ValueError(f"{onnx_path}: {value.name!r} is a {kind}, not a tensor; Triton "
                         f"configs here describe plain tensors only")
    tensor = value.type.tensor_type
    elem = onnx.TensorProto.DataType.Name(tensor.elem_type)
    if elem not in ONNX_DTYPES:
        raise ValueError(f"{onnx_path}: {value.name!r} has element type {elem}; only "
                         f"{', '.join(ONNX_DTYPES)} (float32/float16) are supported")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if not tensor.HasField("shape") or not dims:
        raise ValueError(f"{onnx_path}: {value.name!r} has no shape; it needs at least a "
                         f"dynamic batch dimension")
    if dims[0] != -1:
        raise ValueError(f"{onnx_path}: {value.name!r} has a fixed first dimension "
                         f"({dims[0]}); Triton batches along it, so re-export the model with "
                         f"a dynamic batch dimension")
    return IOTensor(value.name, tuple(dims[1:]), ONNX_DTYPES[elem])


def _write_model(folder: Path, text: str, source: Path, filename: str) -> Path:
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, version / filename)
    (folder / "config.pbtxt").write_text(text)
    return folder


def _external_data_files(onnx_path: Path) -> list[str]:
    """Relative paths of the weight files an ONNX model keeps beside itself, if any."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    files: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files.update(e.value for e in tensor.external_data if e.key == "location")
    outside = sorted(f for f in files if Path(f).is_absolute() or ".." in Path(f).parts)
    if outside:
        raise ValueError(f"{onnx_path} keeps weights outside its own folder ({outside}); "
                         f"re-save it with its external data beside the model")
    missing = sorted(f for f in files if not (onnx_path.parent / f).is_file())
    if missing:
        raise FileNotFoundError(f"{onnx_path} keeps weights in {missing}, which are not next "
                                f"to it; copy them beside the model or re-export")
    return sorted(files)


def _tensor_block(kind: str, tensors: list[IOTensor]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        _check_tensor(t)
        lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {DATA_TYPES[t.dtype]}",
                  f"    dims: [ {', '.join(str(d) for d in t.dims)} ]",
                  "  }" + ("," if i < len(tensors) - 1 else "")]
    return lines + ["]"]


def _check_tensor(t: IOTensor) -> None:
    if not t.name:
        raise ValueError("a model input/output has an empty name")
    if t.dtype not in DATA_TYPES:
        raise ValueError(f"tensor {t.name!r} has dtype {t.dtype!r}; known: "
                         f"{', '.join(DATA_TYPES)}")
    if not t.dims:
        raise ValueError(f"tensor {t.name!r} has no dimension besides the batch one; Triton "
                         f"needs at least one (export it as (N, 1) instead of (N,))")
    if any(d == 0 or d < -1 for d in t.dims):
        raise ValueError(f"tensor {t.name!r} has dims {t.dims}: give every dimension after the "
                         f"batch one as a positive size or -1 (dynamic)")


def _check_unique(tensors: list[IOTensor]) -> None:
    names = [t.name for t in tensors]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"tensor names {repeated} are used more than once; every input and "
                         f"output needs its own name")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"model name {name!r} is not usable as a Triton model folder; use "
                         f"letters, digits, '_', '.' and '-' only")


def _check_positive(what: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")


def _quote(text: str) -> str:
    """A protobuf text-format string literal (C-style escapes)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)          # UTF-8 is legal inside text-format strings
    return '"' + "".join(out) + '"'
