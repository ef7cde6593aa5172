"""Triton when it is installed, and the rule for when a kernel runs instead of its reference.

Kernels run on CUDA tensors through Triton, and on CPU tensors only when the Triton interpreter
is on (TRITON_INTERPRET=1, set before triton is imported): that is how CI tests them. Otherwise
a CPU call runs the op's plain-torch reference. Without triton installed (a CPU-only install
without the dev extra) every op still works through its reference.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:        # pragma: no cover - exercised only on installs without triton
    triton = None
    tl = None


def jit(fn):
    """triton.jit when triton is importable; the undecorated function otherwise."""
    return triton.jit(fn) if triton is not None else fn


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def runs_triton(x: torch.Tensor) -> bool:
    """True when a call on `x` goes to the Triton kernel rather than the torch reference."""
    if triton is None:
        return False
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreting())


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_device(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
