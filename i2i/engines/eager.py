"""eager and fused: the checkpoint's nn.Module run by PyTorch.

eager calls each signature's method (forward, masked, ...) in fp32, fp16 or bf16 (inputs cast
in, outputs cast back to float32 on the CPU). fused is eager with i2i's Triton kernels swapped in
(use_fused_kernels) and, on CUDA, one CUDA graph per (signature, input shapes).
"""

from __future__ import annotations

import threading

import torch

from .base import Batch, EngineSpec, check_batch, to_host

MAX_GRAPHS = 64                     # fused: CUDA graphs kept, one per (input shapes)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchEngine:
    """eager: the checkpoint's nn.Module, in fp32, fp16 or bf16 (inputs cast in, outputs cast
    back)."""

    name = "eager"
    artifacts = None                    # runs the checkpoint, not an exported file

    def __init__(self, module: torch.nn.Module, spec: EngineSpec):
        self.spec = spec
        self.device = torch.device(spec.device)
        self.dtype = DTYPES[spec.precision]
        # channels_last lets cuDNN pick its NHWC convolutions on tensor cores, and oneDNN its
        # bf16 convolutions on the CPU (about 1.7x fp32 on AVX-512 BF16; NCHW bf16 is slower).
        fast = self.device.type == "cuda" or self.dtype == torch.bfloat16
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        self.module = module.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self._lock = threading.Lock()          # fused: one set of static graph buffers

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_batch(self.spec, batch)
        label = self.spec.signature(batch)
        inputs = {k: self._place(v) for k, v in batch.items()}
        with self._lock:
            out = self._forward(label, inputs)
            return {t.name: to_host(out[t.name]) for t in self.spec.signatures[label].outputs}

    def _place(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def _forward(self, label: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self._call(label, inputs)

    def _call(self, label: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        method = getattr(self.module, self.spec.signatures[label].method)
        return method(**inputs)


class FusedEngine(TorchEngine):
    """eager + the Triton kernels (use_fused_kernels); on CUDA, one CUDA graph per input shape.

    A graph is captured on the first run of each (signature, N, H, W) and replayed after: the
    inputs are copied into its static buffers and its static outputs copied out, under the
    engine's lock. On the CPU the fused ops run their torch reference (or the Triton
    interpreter in tests).
    """

    name = "fused"

    def __init__(self, module: torch.nn.Module, spec: EngineSpec):
        from ..kernels import use_fused_kernels

        super().__init__(use_fused_kernels(module), spec)
        # (signature, (input name, shape) pairs) -> (graph, static inputs, static outputs)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    def _forward(self, label: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = (label, tuple((k, tuple(v.shape)) for k, v in sorted(inputs.items())))
        if self.device.type != "cuda" or (key not in self._graphs
                                          and len(self._graphs) >= MAX_GRAPHS):
            return super()._forward(label, inputs)
        if key not in self._graphs:
            self._graphs[key] = self._capture(label, inputs)
        graph, static_in, static_out = self._graphs[key]
        for k, v in inputs.items():
            static_in[k].copy_(v)
        graph.replay()
        return static_out

    def _capture(self, label: str, inputs: dict[str, torch.Tensor]
                 ) -> tuple[torch.cuda.CUDAGraph, dict, dict]:
        # no_grad, not inference_mode: the static buffers are refilled in place on every replay.
        static = {k: v.clone() for k, v in inputs.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):                # Triton compiles, cuDNN picks its algorithms
                self._call(label, static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # One memory pool for all graphs: runs are serialised by the lock, so they never overlap.
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            outputs = self._call(label, static)
        return graph, static, outputs
