"""openvino: the OpenVINO runtime on the CPU, reading the exported ONNX graphs directly.

    fp32  model.onnx        inference precision f32 (OpenVINO's CPU default is bf16 wherever
                            the CPU has it, so f32 is asked for explicitly)
    bf16  model.onnx        inference precision bf16: weights and activations in bfloat16 on
                            CPUs with AVX-512 BF16 or AMX (bf16_support() says where not)
    int8  model.int8.openvino.onnx   its own QDQ graph (i2i.export.quantize: unsigned
                            asymmetric activations at the convolutions' inputs); OpenVINO fuses
                            its pairs into int8 convolutions, the rest runs in f32

One compiled model and one infer request per signature; runs are serialised by a lock (the
server's batcher runs one batch at a time anyway). Threads follow torch's setting, like the
onnxruntime engine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from .base import Batch, EngineSpec, check_batch, to_host

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}     # INFERENCE_PRECISION_HINT


def availability() -> str | None:
    """None when the openvino package imports, else what to install."""
    try:
        import openvino  # noqa: F401
    except ImportError as err:
        return f"the openvino package is not installed ({err}); pip install openvino"
    return None


def bf16_support() -> str | None:
    """None when OpenVINO's CPU plugin reports BF16 among its capabilities, else why not."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in capabilities:
        return None
    return (f"this CPU has no bf16 support that OpenVINO can use (its capabilities: "
            f"{', '.join(capabilities)}; bf16 needs AVX-512 BF16 or AMX): serve fp32 or int8")


class OpenVinoEngine:
    name = "openvino"
    # precision -> (manifest artifact key, file suffix, the i2i-export flags that write it)
    artifacts = {"fp32": ("openvino", ".onnx", "--formats onnx,openvino"),
                 "bf16": ("openvino_bf16", ".onnx", "--formats onnx,openvino --precision bf16"),
                 "int8": ("openvino_int8", ".int8.openvino.onnx",
                          "--formats onnx,openvino --precision int8")}

    def __init__(self, files: dict[str, Path], spec: EngineSpec):
        import openvino as ov

        if spec.device != "cpu":
            raise ValueError(f"engine 'openvino' runs on the CPU, not {spec.device}; open it "
                             "with device='cpu'")
        self.spec = spec
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": HINTS[spec.precision],
                  "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        # signature -> (infer request, its output names)
        self._requests = {label: self._open(core, path, label, config)
                          for label, path in files.items()}
        self._lock = threading.Lock()

    def _open(self, core, path: Path, label: str, config: dict) -> tuple[object, list[str]]:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        signature = self.spec.signatures[label]
        graph_in = [i.get_any_name() for i in compiled.inputs]
        graph_out = [o.get_any_name() for o in compiled.outputs]
        if graph_in != list(signature.names) or graph_out != [t.name for t in signature.outputs]:
            raise RuntimeError(f"{path} has inputs {graph_in} -> outputs {graph_out}, "
                               "but its manifest names others; re-export with i2i-export")
        return compiled.create_infer_request(), graph_out

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        label = self.spec.signature(batch)
        request, names = self._requests[label]
        feed = {k: to_host(v).numpy() for k, v in batch.items()}
        with self._lock:
            request.infer(feed)
            # copies: the request's output buffers are reused by the next run
            return {name: to_host(torch.from_numpy(request.get_tensor(name).data.copy()))
                    for name in names}
