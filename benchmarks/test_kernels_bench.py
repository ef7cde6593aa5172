"""Kernel benchmarks: the fused Triton kernels against the eager torch composition and
torch.compile of the same reference, with achieved GB/s next to the bytes floor (each tensor
read once and written once) and a device-to-device copy as the bandwidth ceiling.

    .venv/bin/python -m pytest benchmarks/test_kernels_bench.py --benchmark-json out/kernels.json
    .venv/bin/python benchmarks/kernel_report.py out/kernels.json   # -> benchmarks/results/

On a GPU, times come from triton.testing.do_bench (CUDA events, L2 flushed); on the CPU from
pytest-benchmark, and the Triton column is skipped (the interpreter is a test tool, not a
backend).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from i2i.kernels import (
    add_mask_clamp_reference,
    instance_norm_act_reference,
    instance_norm_hadain_reference,
)
from i2i.kernels._triton import interpreting, triton
from i2i.kernels.add_mask_clamp import launch_add_mask_clamp
from i2i.kernels.instance_norm_act import launch_instance_norm_act
from i2i.kernels.instance_norm_hadain import launch_instance_norm_hadain

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# The shapes on a GPU; on a 2-core CPU the same shapes divided so a round takes < 1 s.
SCALE = 1 if CUDA else int(os.environ.get("I2I_BENCH_CPU_DIVISOR", "8"))
NORM_SHAPES = [(32 // SCALE, 256, 64, 64), (max(1, 8 // SCALE), 64, 256, 256)]
MASK_SHAPES = [(32 // SCALE, 3, 256, 256)]
DTYPES = [torch.float16, torch.float32]
IMPLS = ["triton", "eager", "compile", "copy"]


def _inputs(op: str, shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) + 1).to(DEVICE, dtype)
    N, C, H, W = shape
    if op == "instance_norm_act":
        return (x, None, None, x.clone(), False)                   # conv-norm-add step
    if op == "instance_norm_hadain":
        mask = torch.rand((N, 1, H, W), generator=g).to(DEVICE, dtype)
        return (x, mask, *[torch.randn((N, C), generator=g).to(DEVICE, dtype)
                           for _ in range(4)])
    return (x, (torch.randn(shape, generator=g) * 2).to(DEVICE, dtype), 1.0)


def _floor_bytes(op: str, args) -> int:
    """Bytes a perfect kernel moves: every input tensor read once, every output written once."""
    x = args[0]
    tensors = [t for t in args if isinstance(t, torch.Tensor)]
    read = sum(t.numel() * t.element_size() for t in tensors)
    outputs = 2 if op == "add_mask_clamp" else 1
    return read + outputs * x.numel() * x.element_size()


REFERENCE = {"instance_norm_act": instance_norm_act_reference,
             "instance_norm_hadain": instance_norm_hadain_reference,
             "add_mask_clamp": add_mask_clamp_reference}
TRITON = {"instance_norm_act": launch_instance_norm_act,
          "instance_norm_hadain": launch_instance_norm_hadain,
          "add_mask_clamp": launch_add_mask_clamp}


def _function(op: str, impl: str, args):
    eager = functools.partial(REFERENCE[op], compute_dtype=None)   # torch ops in the input dtype
    if impl == "triton":
        if not CUDA or triton is None or interpreting():
            pytest.skip("Triton kernels are benchmarked on a GPU only (no CUDA device here)")
        return lambda: TRITON[op](*args)
    if impl == "eager":
        return lambda: eager(*args)
    if impl == "compile":
        compiled = torch.compile(eager, dynamic=False)
        return lambda: compiled(*args)
    x = args[0]
    out = torch.empty_like(x)
    return lambda: out.copy_(x)


def _cases():
    for op, shapes in (("instance_norm_act", NORM_SHAPES), ("instance_norm_hadain", NORM_SHAPES),
                       ("add_mask_clamp", MASK_SHAPES)):
        for shape in shapes:
            for dtype in DTYPES:
                for impl in IMPLS:
                    yield pytest.param(op, shape, dtype, impl,
                                       id=f"{op}-{'x'.join(map(str, shape))}-"
                                          f"{str(dtype)[6:]}-{impl}")


@pytest.mark.parametrize("op,shape,dtype,impl", list(_cases()))
def test_kernel_speed(benchmark, op, shape, dtype, impl):
    args = _inputs(op, shape, dtype)
    fn = _function(op, impl, args)
    fn()                                                   # compile / warm up
    bytes_moved = 2 * args[0].numel() * args[0].element_size() if impl == "copy" else \
        _floor_bytes(op, args)
    benchmark.extra_info.update({"op": op, "shape": list(shape), "dtype": str(dtype)[6:],
                                 "impl": impl, "floor_bytes": _floor_bytes(op, args),
                                 "moved_bytes": bytes_moved, "device": _device_name()})
    if CUDA:
        from triton.testing import do_bench
        ms = do_bench(fn, warmup=25, rep=200)
        benchmark.extra_info["do_bench_ms"] = ms
        benchmark.pedantic(lambda: (fn(), torch.cuda.synchronize()), rounds=20, iterations=1)
    else:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


def _device_name() -> str:
    if CUDA:
        return torch.cuda.get_device_name(0)
    from i2i.sysinfo import cpu_name
    return f"{cpu_name()} ({os.cpu_count()} cores)"
