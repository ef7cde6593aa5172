"""onnxruntime: model.onnx, model.fp16.onnx or model.int8.onnx (and model.<signature>[.fp16].onnx,
...) through onnxruntime, the CUDA provider first where one was asked for; one session per
signature. The int8 graph is the QDQ one (i2i.export.quantize): onnxruntime fuses its pairs into
int8 convolutions."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Batch, EngineSpec, check_batch, to_host


class OnnxRuntimeEngine:
    name = "onnxruntime"
    # precision -> (manifest artifact key, file suffix, the i2i-export flags that write it)
    artifacts = {"fp32": ("onnx", ".onnx", "--formats onnx"),
                 "fp16": ("onnx_fp16", ".fp16.onnx", "--formats onnx --fp16"),
                 "int8": ("onnx_int8", ".int8.onnx", "--formats onnx --precision int8")}

    def __init__(self, files: dict[str, Path], spec: EngineSpec, providers: list | None = None):
        self.spec = spec
        providers = providers or ["CPUExecutionProvider"]
        # signature -> (session, its output names, its float16 inputs)
        self._sessions = {label: self._open(path, label, providers)
                          for label, path in files.items()}

    def _open(self, path: Path, label: str, providers: list
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
        signature = self.spec.signatures[label]
        graph_in = [i.name for i in session.get_inputs()]
        graph_out = [o.name for o in session.get_outputs()]
        if graph_in != list(signature.names) or graph_out != [t.name for t in signature.outputs]:
            raise RuntimeError(f"{path} has inputs {graph_in} -> outputs {graph_out}, "
                               "but its manifest names others; re-export with i2i-export")
        # fp16-I/O graphs (i2i-export --fp16-io) take half inputs: cast at the boundary.
        half = {i.name for i in session.get_inputs() if i.type == "tensor(float16)"}
        return session, graph_out, half

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        label = self.spec.signature(batch)
        session, names, half = self._sessions[label]
        feed = {k: to_host(v).to(torch.float16 if k in half else torch.float32).numpy()
                for k, v in batch.items()}
        results = session.run(names, feed)
        return {name: to_host(torch.from_numpy(value))
                for name, value in zip(names, results, strict=True)}
