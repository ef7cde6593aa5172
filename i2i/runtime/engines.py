"""Engines: one protocol over every backend, so the batcher, server and parity tests run any of
them the same way.

    engine = open_engine("onnxruntime", export_dir=Path("exports/additive"))
    out = engine.run({"image": x})          # x: (N, 3, H, W) float32 in [-1, 1], N <= max
    out["translation"], out["mask"]         # float32 CPU tensors (N, 3, H, W)

eager and fused run the PyTorch model from its checkpoint; onnxruntime, tensorrt and aoti run
the artifacts of an i2i-export directory, whose manifest gives their names, batch range and size.
Models with an exemplar take it as a second input of the same shape ({"image", "exemplar"}).
Optional inputs (LOMIT's user mask (N, 1, H, W), which replaces the computed one) are those of
the model's `masked_inputs`: eager and fused pass them to module.translate(), onnxruntime runs
the export's masked variant (model.masked.onnx) for batches that carry them. A batch either has
them all or none.
Every engine checks a batch (names, rank, channels, size, rows) before it runs it: a mistake is a
ValueError that says what to change, never garbage from a compiled kernel reading out of bounds.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..export.manifest import read_manifest, sha256
from ..models import load, read_document
from ..models.spec import ModelSpec, TensorSpec

ENGINES = ("eager", "fused", "onnxruntime", "tensorrt", "aoti")
PRECISIONS = ("auto", "fp32", "fp16")
DEFAULT_MAX_BATCH = 32              # eager/fused: nothing fixes a batch limit but memory
MAX_GRAPHS = 64                     # fused: CUDA graphs kept, one per (input shapes)
Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class EngineSpec:
    model: str                                  # registry name, e.g. "additive"
    inputs: tuple[TensorSpec, ...]              # shapes (-1, C, -1, -1)
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int                         # the most rows one run() takes
    size: tuple[int, int] | None                # fixed (H, W) for AOTI/TensorRT, else None
    size_multiple: int                          # H and W must be multiples of this
    default_size: tuple[int, int]               # training/export size, for resizing images
    precision: str                              # "fp32" | "fp16"
    device: str                                 # "cpu" | "cuda:0"
    optional_inputs: tuple[TensorSpec, ...] = ()    # a batch may add all of these, or none
    refused_inputs: tuple[tuple[str, str], ...] = ()    # (name, why not): optional inputs of the
                                                        # model that this engine cannot take


def mask_input(spec: EngineSpec) -> TensorSpec | None:
    """The engine's mask input (one channel in [0, 1]; maskcyclegan's required one, lomit's
    optional one), which a mask file or a mask scheme fills; None if it has none."""
    return next((t for t in (*spec.inputs, *spec.optional_inputs)
                 if t.shape[1] == 1 and tuple(t.range) == (0.0, 1.0)), None)


class Engine(Protocol):
    name: str
    spec: EngineSpec

    def run(self, batch: Batch) -> dict[str, torch.Tensor]: ...


def check_batch(spec: EngineSpec, batch: Batch) -> int:
    """The batch's row count N; ValueError unless `batch` fits `spec` (names, shapes, size)."""
    names = [t.name for t in spec.inputs]
    optional = [t.name for t in spec.optional_inputs]
    for name, reason in spec.refused_inputs:
        if isinstance(batch, Mapping) and name in batch:
            raise ValueError(reason)
    if not isinstance(batch, Mapping) or not (set(batch) == set(names) or
                                              set(batch) == {*names, *optional}):
        given = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        also = f" (and optionally all of {optional})" if optional else ""
        raise ValueError(f"inputs {given} do not match the engine's inputs {names}{also}")
    rows, sizes = set(), set()
    for t in (*spec.inputs, *(t for t in spec.optional_inputs if t.name in batch)):
        x = batch[t.name]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input {t.name!r} must be an (N, C, H, W) tensor, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"input {t.name!r} is {x.dtype}; engines take float32 in [-1, 1] "
                             "(for uint8 pixels: x.float() / 127.5 - 1)")
        n, c, h, w = x.shape
        if t.shape[1] > 0 and c != t.shape[1]:
            raise ValueError(f"input {t.name!r} has {c} channels; the model takes {t.shape[1]} "
                             "(convert grey or RGBA images to RGB first)")
        if spec.size is not None and (h, w) != spec.size:
            raise ValueError(f"input {t.name!r} is {h}x{w}; this {spec.device} engine takes only "
                             f"{spec.size[0]}x{spec.size[1]} images (fixed at export): resize, or "
                             "re-export with --size, or use the onnxruntime engine")
        m = spec.size_multiple
        if h % m or w % m or h < m or w < m:
            raise ValueError(f"input {t.name!r} is {h}x{w}; height and width must be positive "
                             f"multiples of {m} (pad or resize to {-(-h // m) * m}x"
                             f"{-(-w // m) * m})")
        rows.add(n)
        sizes.add((h, w))
    if len(rows) != 1:
        raise ValueError(f"inputs have different batch sizes {sorted(rows)}; give every input "
                         "the same number of rows")
    if len(sizes) != 1:
        raise ValueError(f"inputs have different sizes {sorted(sizes)}; give every input the "
                         "image's height and width")
    n = rows.pop()
    if not 1 <= n <= spec.max_batch_size:
        raise ValueError(f"batch of {n} rows; this engine takes 1 to {spec.max_batch_size} "
                         "rows per run (split the batch)")
    return n


def _to_host(out: torch.Tensor) -> torch.Tensor:
    return out.to("cpu", torch.float32).contiguous()


class TorchEngine:
    """eager: the checkpoint's nn.Module, in fp32 or fp16 (inputs cast in, outputs cast back)."""

    name = "eager"

    def __init__(self, module: torch.nn.Module, spec: EngineSpec):
        self.spec = spec
        self.device = torch.device(spec.device)
        self.dtype = torch.float16 if spec.precision == "fp16" else torch.float32
        # channels_last lets cuDNN pick its NHWC convolutions on tensor cores.
        self.memory_format = (torch.channels_last if self.device.type == "cuda"
                              else torch.contiguous_format)
        self.module = module.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self._lock = threading.Lock()          # fused: one set of static graph buffers

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        inputs = {k: v.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
                  for k, v in batch.items()}
        with self._lock:
            out = self._forward(inputs)
            return {t.name: _to_host(out[t.name]) for t in self.spec.outputs}

    def _forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self._call(inputs)

    def _call(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # forward() takes the model's inputs only; translate() also takes the optional ones.
        if any(t.name in inputs for t in self.spec.optional_inputs):
            return self.module.translate(**inputs)
        return self.module(**inputs)


class FusedEngine(TorchEngine):
    """eager + the Triton kernels (use_fused_kernels); on CUDA, one CUDA graph per input shape.

    A graph is captured on the first run of each (N, H, W) and replayed after: the inputs are
    copied into its static buffers and its static outputs copied out, under the engine's lock.
    On the CPU the fused ops run their torch reference (or the Triton interpreter in tests).
    """

    name = "fused"

    def __init__(self, module: torch.nn.Module, spec: EngineSpec):
        from ..kernels import use_fused_kernels

        super().__init__(use_fused_kernels(module), spec)
        # (input name, shape) pairs -> (graph, static inputs it reads, static outputs it writes)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    def _forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = tuple((k, tuple(v.shape)) for k, v in sorted(inputs.items()))
        if self.device.type != "cuda" or (key not in self._graphs
                                          and len(self._graphs) >= MAX_GRAPHS):
            return super()._forward(inputs)
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs)
        graph, static_in, static_out = self._graphs[key]
        for k, v in inputs.items():
            static_in[k].copy_(v)
        graph.replay()
        return static_out

    def _capture(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, dict,
                                                                  dict]:
        # no_grad, not inference_mode: the static buffers are refilled in place on every replay.
        static = {k: v.clone() for k, v in inputs.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):                # Triton compiles, cuDNN picks its algorithms
                self._call(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # One memory pool for all graphs: runs are serialised by the lock, so they never overlap.
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            outputs = self._call(static)
        return graph, static, outputs


class OnnxRuntimeEngine:
    """model.onnx or model.fp16.onnx through onnxruntime (CUDA provider first when asked for);
    batches with the optional inputs run the masked variant, model.masked[.fp16].onnx."""

    name = "onnxruntime"

    def __init__(self, path: Path, spec: EngineSpec, providers: list,
                 masked: Path | None = None):
        self.spec = spec
        inputs, outputs = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
        extra = [t.name for t in spec.optional_inputs]
        # with optional inputs? -> (session, its output names, its float16 inputs)
        self._graphs = {False: self._open(path, inputs, outputs, providers)}
        if masked is not None:
            # The variant leaves out outputs named like its inputs: translate() echoes those.
            self._graphs[True] = self._open(masked, inputs + extra,
                                            [n for n in outputs if n not in extra], providers)

    def _open(self, path: Path, inputs: list[str], outputs: list[str], providers: list
              ) -> tuple[object, list[str], set[str]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread setting per process: follow torch's, which the server and tests set.
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=providers)
        if self.spec.device.startswith("cuda") and \
                session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError("onnxruntime could not start its CUDA provider (are CUDA and "
                               "cuDNN libraries installed?); open the engine with device='cpu'")
        graph_in = [i.name for i in session.get_inputs()]
        graph_out = [o.name for o in session.get_outputs()]
        if graph_in != inputs or graph_out != outputs:
            raise RuntimeError(f"{path} has inputs {graph_in} -> outputs {graph_out}, "
                               "but its manifest names others; re-export with i2i-export")
        # fp16-I/O graphs (i2i-export --fp16-io) take half inputs: cast at the boundary.
        half = {i.name for i in session.get_inputs() if i.type == "tensor(float16)"}
        return session, graph_out, half

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        session, names, half = self._graphs[len(batch) > len(self.spec.inputs)]
        feed = {k: _to_host(v).to(torch.float16 if k in half else torch.float32).numpy()
                for k, v in batch.items()}
        results = dict(zip(names, session.run(names, feed), strict=True))
        return {t.name: _to_host(torch.from_numpy(results[t.name]) if t.name in results
                                 else batch[t.name]) for t in self.spec.outputs}


class TensorRTEngine:
    """model.plan through the TensorRT runtime: torch CUDA tensors bound by address."""

    name = "tensorrt"

    def __init__(self, path: Path, spec: EngineSpec):
        import tensorrt as trt

        self.spec = spec
        self.device = torch.device(spec.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {path}; re-export it with i2i-export "
                               "on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: _TRT_DTYPES[self.engine.get_tensor_dtype(n).name] for n in names}
        self._lock = threading.Lock()           # one execution context: one run at a time

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        stream = torch.cuda.current_stream(self.device)
        with self._lock, torch.cuda.device(self.device):
            inputs = {k: v.to(self.device, self.dtypes[k]).contiguous() for k, v in batch.items()}
            for name, x in inputs.items():      # the tensors stay alive until the sync below
                self.context.set_input_shape(name, tuple(x.shape))
                self.context.set_tensor_address(name, x.data_ptr())
            outputs = {}
            for t in self.spec.outputs:
                shape = tuple(self.context.get_tensor_shape(t.name))   # (N, C, H, W) from N
                outputs[t.name] = torch.empty(shape, dtype=self.dtypes[t.name],
                                              device=self.device)
                self.context.set_tensor_address(t.name, outputs[t.name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT failed to run the plan; its log above says why")
            return {k: _to_host(v) for k, v in outputs.items()}    # .cpu() syncs the stream


_TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
               "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool}


class AotiEngine:
    """model.pt2 (AOTInductor): fixed H and W, batch within the exported range."""

    name = "aoti"

    def __init__(self, path: Path, spec: EngineSpec, model_spec: ModelSpec):
        from ..export.aoti import load_aoti

        self.spec = spec
        self.device = torch.device(spec.device)
        self._run = load_aoti(path, model_spec, spec.device)

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        out = self._run({k: v.to(self.device, torch.float32).contiguous()
                         for k, v in batch.items()})
        return {t.name: _to_host(out[t.name]) for t in self.spec.outputs}


@dataclass
class _Plan:
    """What opening an engine needs, checked without loading anything heavy."""

    name: str
    device: str
    precision: str
    manifest: dict | None = None
    checkpoint: Path | None = None
    artifact: Path | None = None
    providers: list | None = None


# engine -> (manifest artifact key per precision, file, i2i-export flags that write it)
_ARTIFACTS = {("onnxruntime", "fp32"): ("onnx", "model.onnx", "--formats onnx"),
              ("onnxruntime", "fp16"): ("onnx_fp16", "model.fp16.onnx", "--formats onnx --fp16"),
              ("tensorrt", "fp16"): ("tensorrt", "model.plan", "--formats trt"),
              ("aoti", "fp32"): ("aoti", "model.pt2", "--formats aoti")}


def _check_name(name: str) -> None:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


def _torch_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use 'cpu'")
    if target.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return "cpu" if target.type == "cpu" else f"cuda:{target.index or 0}"


def _precision(name: str, precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":     # fused is the fast path: fp16 where the GPU has tensor cores
        return {"fused": "fp16" if device != "cpu" else "fp32", "tensorrt": "fp16"}.get(name,
                                                                                        "fp32")
    if (name, precision) in (("tensorrt", "fp32"), ("aoti", "fp16")):
        kind = "fp16 (built from model.fp16.onnx)" if name == "tensorrt" else "fp32"
        raise ValueError(f"engine {name!r} runs {kind} only; use precision='auto', or the "
                         "onnxruntime engine for the other precision")
    return precision


def _artifact(plan: _Plan, export_dir: Path | None) -> Path:
    key, file, flags = _ARTIFACTS[plan.name, plan.precision]
    if export_dir is None:
        raise ValueError(f"engine {plan.name!r} runs {file} from an export directory: pass "
                         f"export_dir (--export-dir), written by i2i-export {flags}")
    plan.manifest = read_manifest(export_dir)
    entry = plan.manifest.get("artifacts", {}).get(key) or {}
    path = Path(export_dir) / file
    if not path.is_file() or "file" not in entry:
        why = f" (at export: {entry['skipped']})" if "skipped" in entry else ""
        raise FileNotFoundError(f"{path} not found{why}: export it with i2i-export {flags} "
                                f"--out {export_dir}")
    if entry.get("passed") is False:
        warnings.warn(f"{path} missed its parity check at export ({entry.get('parity')}); "
                      "its outputs may differ from the checkpoint's", stacklevel=3)
    return path


def _checkpoint(name: str, export_dir: Path | None, checkpoint: Path | None) -> Path:
    """The checkpoint to run: the given one (which must be the exported one, if both are given),
    else a copy of the exported checkpoint inside export_dir (found by name, checked by sha256)."""
    manifest = read_manifest(export_dir) if export_dir is not None else None
    want = (manifest or {}).get("checkpoint", {})
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found; train one with i2i-train")
        if want.get("sha256") and sha256(path) != want["sha256"]:
            raise ValueError(f"checkpoint {path} is not the one {export_dir} was exported from "
                             f"({want.get('file')}, sha256 {want['sha256'][:12]}...); pass that "
                             "checkpoint, or re-export from this one")
        return path
    if manifest is None:
        raise ValueError(f"engine {name!r} runs the PyTorch model: pass checkpoint "
                         "(--checkpoint PATH)")
    copy = Path(export_dir) / str(want.get("file", ""))
    if want.get("file") and copy.is_file() and sha256(copy) == want.get("sha256"):
        return copy
    raise ValueError(f"engine {name!r} runs the PyTorch model, and {export_dir} records only the "
                     f"name of its checkpoint ({want.get('file')}), not where it is: pass "
                     f"--checkpoint PATH (checkpoint=...), or copy it into {export_dir}")


def _onnx_providers(device: str) -> tuple[str, list]:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda:0" if has_cuda and torch.cuda.is_available() else "cpu"
    device = _torch_device(device)
    if device == "cpu":
        return device, ["CPUExecutionProvider"]
    if not has_cuda:
        raise ValueError(f"device {device!r}: this onnxruntime has no CUDA provider "
                         "(pip install onnxruntime-gpu), or use device='cpu'")
    index = torch.device(device).index or 0
    return device, [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _plan(name: str, export_dir: Path | None, checkpoint: Path | None, device: str,
          precision: str) -> _Plan:
    """Every check that opening `name` needs, short of loading it; raises with the reason."""
    if name in ("eager", "fused"):
        path = _checkpoint(name, export_dir, checkpoint)
        device = _torch_device(device)
        return _Plan(name, device, _precision(name, precision, device), checkpoint=path)
    if name == "onnxruntime":
        device, providers = _onnx_providers(device)
        plan = _Plan(name, device, _precision(name, precision, device), providers=providers)
    elif name == "tensorrt":
        from ..export.tensorrt import availability, check_plan_compatible

        reason = availability()
        if reason is not None:
            raise RuntimeError(f"engine 'tensorrt' cannot run here: {reason}")
        device = _torch_device("cuda:0" if device == "auto" else device)
        if device == "cpu":
            raise ValueError("engine 'tensorrt' runs on a CUDA GPU only; use device='cuda'")
        plan = _Plan(name, device, _precision(name, precision, device))
    else:
        plan = _Plan(name, "cpu", _precision(name, precision, "cpu"))
    plan.artifact = _artifact(plan, export_dir)
    entry = plan.manifest["artifacts"][_ARTIFACTS[name, plan.precision][0]]
    if name == "tensorrt":
        check_plan_compatible(entry)           # another GPU or TensorRT version: re-export
    if name == "aoti":                          # a package runs on the device it was built for
        built = "cpu" if entry.get("device", "cpu") == "cpu" else "cuda"
        if built == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{plan.artifact} was compiled for a CUDA GPU and this machine "
                               "has none; re-export it here with i2i-export --formats aoti")
        plan.device = _torch_device(built if device == "auto" else device)
        if not plan.device.startswith(built):
            raise ValueError(f"{plan.artifact} was compiled for {built}, not {plan.device}; "
                             "open it with device='auto', or re-export it on that device")
    return plan


def engine_availability(name: str, export_dir: Path | None, checkpoint: Path | None, *,
                        device: str = "auto", precision: str = "auto") -> str | None:
    """None when `open_engine(name, ...)` can open here, otherwise the reason it cannot."""
    _check_name(name)
    try:
        _plan(name, Path(export_dir) if export_dir else None, checkpoint, device, precision)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        return str(err)
    return None


def open_engine(name: str, *, export_dir: Path | None = None, checkpoint: Path | None = None,
                device: str = "auto", precision: str = "auto", max_batch_size: int | None = None,
                compile: bool = False) -> Engine:
    """Open engine `name` (one of ENGINES).

    eager/fused: the checkpoint (or the exported one, when export_dir holds a copy of it); a
    checkpoint given with export_dir must be the one exported. max_batch_size defaults to 32.
    onnxruntime/tensorrt/aoti: export_dir's artifact; max_batch_size defaults to the exported
    maximum and may only lower it. precision "auto": fp16 for fused on CUDA and for tensorrt,
    else fp32. compile: torch.compile the module (eager/fused only).
    """
    _check_name(name)
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    plan = _plan(name, Path(export_dir) if export_dir else None, checkpoint, device, precision)
    if name in ("eager", "fused"):
        return _open_torch(plan, export_dir, max_batch_size or DEFAULT_MAX_BATCH, compile)
    if compile:
        raise ValueError(f"compile=True applies to the eager and fused engines, not {name!r} "
                         "(its artifact is compiled at export)")
    manifest = plan.manifest
    exported = int(manifest["batch"]["max"])
    inputs = _tensor_specs(manifest["inputs"])
    masked, extra, refusal = _masked_variant(plan, Path(export_dir), inputs)
    spec = EngineSpec(
        model=manifest["model"], inputs=inputs, outputs=_tensor_specs(manifest["outputs"]),
        max_batch_size=min(max_batch_size or exported, exported),
        size=_fixed_size(name, manifest), size_multiple=int(manifest["size_multiple"]),
        default_size=(int(manifest["size"][0]), int(manifest["size"][1])),
        precision=plan.precision, device=plan.device,
        optional_inputs=extra if masked else (),
        refused_inputs=() if masked else tuple((t.name, refusal) for t in extra))
    if name == "onnxruntime":
        return OnnxRuntimeEngine(plan.artifact, spec, plan.providers, masked)
    if name == "tensorrt":
        return TensorRTEngine(plan.artifact, spec)
    channels = spec.inputs[0].shape[1]
    return AotiEngine(plan.artifact, spec, ModelSpec(spec.inputs, spec.outputs,
                                                     spec.size_multiple, channels))


def _open_torch(plan: _Plan, export_dir: Path | None, max_batch: int, compile: bool) -> Engine:
    module, model_spec = load(plan.checkpoint)
    document = read_document(plan.checkpoint)
    trained = document.get("meta", {}).get("training", {}).get("size")
    if trained:
        default = (int(trained), int(trained))
    elif export_dir is not None:
        default = tuple(int(s) for s in read_manifest(Path(export_dir))["size"])
    else:
        default = (256, 256)
    masked = tuple(getattr(module, "masked_inputs", ()))      # translate()'s optional inputs
    spec = EngineSpec(model=document["model"], inputs=model_spec.inputs,
                      outputs=model_spec.outputs, max_batch_size=max_batch, size=None,
                      size_multiple=model_spec.size_multiple, default_size=default,
                      precision=plan.precision, device=plan.device, optional_inputs=masked)
    engine = (FusedEngine if plan.name == "fused" else TorchEngine)(module, spec)
    if compile:                                 # compiled after the fused modules are swapped in
        engine.module = torch.compile(engine.module)
    return engine


def _masked_variant(plan: _Plan, export_dir: Path, inputs: tuple[TensorSpec, ...]
                    ) -> tuple[Path | None, tuple[TensorSpec, ...], str]:
    """(the masked variant's file for this engine, or None; the inputs it adds; why it cannot
    be used). manifest["variants"]["masked"] mirrors the top level: inputs, outputs, artifacts."""
    variant = plan.manifest.get("variants", {}).get("masked")
    if variant is None:
        return None, (), ""
    names = {t.name for t in inputs}
    extra = tuple(t for t in _tensor_specs(variant["inputs"]) if t.name not in names)
    label = ", ".join(repr(t.name) for t in extra)
    if plan.name != "onnxruntime":
        return None, extra, (f"the {plan.name} engine runs the model without its optional "
                             f"input(s) {label}; serve with --engine onnxruntime, eager or fused")
    key, file, flags = _ARTIFACTS[plan.name, plan.precision]
    entry = variant.get("artifacts", {}).get(key) or {}
    path = export_dir / str(entry.get("file", ""))
    if "file" not in entry or not path.is_file():
        return None, extra, (f"{export_dir} has no {plan.precision} masked variant "
                             f"(model.masked{file[len('model'):]}) for the input(s) {label}; "
                             f"re-export with i2i-export {flags}, or serve with --engine eager")
    if entry.get("passed") is False:
        warnings.warn(f"{path} missed its parity check at export ({entry.get('parity')}); "
                      "its outputs may differ from the checkpoint's", stacklevel=3)
    return path, extra, ""


def _tensor_specs(entries: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(e["name"], tuple(e["shape"]), e.get("dtype", "float32"),
                            tuple(e.get("range", (-1.0, 1.0)))) for e in entries)


def _fixed_size(name: str, manifest: dict) -> tuple[int, int] | None:
    """(H, W) for engines compiled at one size; None where H and W are dynamic."""
    size = (int(manifest["size"][0]), int(manifest["size"][1]))
    if name in ("tensorrt", "aoti"):
        return size
    dynamic = manifest["artifacts"].get("onnx", {}).get("dynamic", ["batch", "height", "width"])
    return None if "height" in dynamic else size


__all__ = ["ENGINES", "Engine", "EngineSpec", "check_batch", "engine_availability",
           "mask_input", "open_engine"]
