"""Engines: one protocol over every backend, opened alike by export's parity gate, the server,
folder translation and the benchmarks.

    engine = open_engine("onnxruntime", export_dir=Path("exports/additive"))
    out = engine.run({"image": x})          # x: (N, 3, H, W) float32 in [-1, 1], N <= max
    out["translation"], out["mask"]         # float32 CPU tensors (N, 3, H, W)
    engine.run({"image": x, "strength": s}) # s (N, 1): the additive `strength` signature

A batch's input names pick the signature it runs (i2i.models.spec). Every engine checks a batch
(check_batch: names, rank, channels, size, rows, mask and knob values) before it runs it: a
mistake is an InputError that says what to change, never garbage from a compiled kernel reading
out of bounds.
"""

from __future__ import annotations

from .aoti import AotiEngine
from .base import PRECISIONS, Engine, EngineSpec, check_batch
from .eager import FusedEngine, TorchEngine
from .opening import engine_availability, open_engine
from .openvino import OpenVinoEngine
from .ort import OnnxRuntimeEngine
from .tensorrt import TensorRTEngine

ENGINES: dict[str, type] = {
    "eager": TorchEngine,
    "fused": FusedEngine,
    "onnxruntime": OnnxRuntimeEngine,
    "tensorrt": TensorRTEngine,
    "aoti": AotiEngine,
    "openvino": OpenVinoEngine,
}
# Besides these names, open_engine takes "auto" with an export: the fastest artifact that
# passed its parity gate and opens here (i2i.engines.choice).

__all__ = ["ENGINES", "PRECISIONS", "Engine", "EngineSpec", "check_batch",
           "engine_availability", "open_engine"]
