"""tensorrt: a TensorRT plan (model.plan in fp16, model.int8.plan in int8; built by
i2i.export.tensorrt) run on a CUDA GPU, and
what deciding that needs: whether TensorRT can run here, and whether a plan fits this machine.

A plan only runs with the TensorRT version that built it, on a GPU of the same compute
capability; the manifest records both, and check_plan_compatible compares them with this
machine. Written against the TensorRT 10.x/11.x Python API; not run on machines without one.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType

import torch

from .base import Batch, EngineSpec, check_batch, to_host

MIN_VERSION = (10, 0)        # strongly typed networks and the 10.x API used here
_TRT_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
               "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool}


class TensorRTEngine:
    """model.plan (and model.<signature>.plan) through the TensorRT runtime: torch CUDA tensors
    bound by address, one execution context per signature."""

    name = "tensorrt"
    artifacts = {"fp16": ("tensorrt", ".plan", "--formats trt"),
                 "int8": ("tensorrt_int8", ".int8.plan", "--formats trt --precision int8")}

    def __init__(self, files: dict[str, Path], spec: EngineSpec):
        trt = _import_tensorrt()
        self.spec = spec
        self.device = torch.device(spec.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._plans = {label: self._load(runtime, path) for label, path in files.items()}
        self._lock = threading.Lock()           # one context per plan: one run at a time

    @staticmethod
    def _load(runtime, path: Path) -> tuple[object, object, dict[str, torch.dtype]]:
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not load {path}; re-export it with i2i-export "
                               "on this machine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        dtypes = {n: _TRT_DTYPES[engine.get_tensor_dtype(n).name] for n in names}
        return engine, engine.create_execution_context(), dtypes

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        label = self.spec.signature(batch)
        _, context, dtypes = self._plans[label]
        stream = torch.cuda.current_stream(self.device)
        with self._lock, torch.cuda.device(self.device):
            inputs = {k: v.to(self.device, dtypes[k]).contiguous() for k, v in batch.items()}
            for name, x in inputs.items():      # the tensors stay alive until the sync below
                context.set_input_shape(name, tuple(x.shape))
                context.set_tensor_address(name, x.data_ptr())
            outputs = {}
            for t in self.spec.signatures[label].outputs:
                shape = tuple(context.get_tensor_shape(t.name))   # (N, C, H, W) from N
                outputs[t.name] = torch.empty(shape, dtype=dtypes[t.name], device=self.device)
                context.set_tensor_address(t.name, outputs[t.name].data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT failed to run the plan; its log above says why")
            return {k: to_host(v) for k, v in outputs.items()}    # .cpu() syncs the stream


def availability() -> str | None:
    """None when TensorRT can build engines here, otherwise the reason it cannot."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install i2i[gpu])"
    try:
        trt = _import_tensorrt()
    except (ImportError, OSError) as err:     # installed, but its libraries do not load
        return (f"tensorrt is installed but does not load ({err}); reinstall it "
                f"(pip install i2i[gpu])")
    if _version_tuple(trt.__version__) < MIN_VERSION:
        return (f"tensorrt {trt.__version__} is too old (need >= "
                f"{'.'.join(map(str, MIN_VERSION))}; pip install -U i2i[gpu])")
    if not torch.cuda.is_available():
        return "no CUDA GPU is available (TensorRT builds engines on a GPU)"
    return None


def current_machine() -> dict[str, str | None]:
    """TensorRT version, GPU name and compute capability ("9.0") here; None where absent."""
    facts: dict[str, str | None] = {"tensorrt": None, "gpu": None, "compute_capability": None}
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            facts["tensorrt"] = _import_tensorrt().__version__
        except (ImportError, OSError):
            pass
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(device)
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["compute_capability"] = f"{major}.{minor}"
    return facts


def check_plan_compatible(manifest_entry: dict) -> None:
    """Raise RuntimeError when this machine cannot load a plan with these manifest facts."""
    missing = [k for k in ("tensorrt", "compute_capability") if not manifest_entry.get(k)]
    if missing:
        raise RuntimeError(f"the manifest's TensorRT entry lacks {missing}, so the plan cannot "
                           f"be checked against this machine; re-export with i2i-export")
    built = _describe(manifest_entry)
    here = current_machine()
    if here["tensorrt"] is None or here["compute_capability"] is None:
        lacking = "TensorRT" if here["tensorrt"] is None else "a CUDA GPU"
        raise RuntimeError(f"model.plan was built with {built}; this machine has no {lacking}. "
                           f"Serve the ONNX model instead, or install tensorrt=="
                           f"{manifest_entry['tensorrt']} (pip) on a machine with such a GPU")
    if (here["tensorrt"] != manifest_entry["tensorrt"]
            or here["compute_capability"] != manifest_entry["compute_capability"]):
        raise RuntimeError(f"model.plan was built with {built}; this machine has "
                           f"{_describe(here)}. A plan only loads with the same TensorRT "
                           f"version and GPU compute capability: re-export with i2i-export on "
                           f"this machine")


def _import_tensorrt() -> ModuleType:
    import tensorrt

    return tensorrt


def _describe(facts: dict) -> str:
    cc = str(facts.get("compute_capability") or "?")
    return (f"TensorRT {facts.get('tensorrt')} on {facts.get('gpu') or 'an unnamed GPU'} "
            f"(sm_{cc.replace('.', '')})")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
