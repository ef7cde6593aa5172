"""The one tolerance table of the kernel tests, and the rule that uses it.

Rule: against an fp64 reference computed from the same (already rounded) inputs, a kernel's
max abs error may be at most twice torch's own error in the same dtype, plus a small epsilon
per dtype, scaled by the output's magnitude. The epsilon is about two units in the last place
of the output dtype: what rounding the result to that dtype alone can cost.
"""

from __future__ import annotations

import math

import torch

EPS = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
TORCH_FACTOR = 2.0


def max_error(out: torch.Tensor, truth: torch.Tensor) -> float:
    return (out.double() - truth.double()).abs().max().item() if out.numel() else 0.0


def assert_kernel_close(kernel: torch.Tensor, torch_same_dtype: torch.Tensor,
                        truth: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    err_kernel = max_error(kernel, truth)
    err_torch = max_error(torch_same_dtype, truth)
    if not math.isfinite(err_torch):           # torch overflowed: hold the kernel to eps alone
        err_torch = 0.0
    scale = max(1.0, truth.abs().max().item() if truth.numel() else 0.0)
    bound = TORCH_FACTOR * err_torch + EPS[dtype] * scale
    assert math.isfinite(err_kernel) and err_kernel <= bound, (
        f"{what} {dtype}: kernel error {err_kernel:.3g} > bound {bound:.3g} "
        f"(torch's own error {err_torch:.3g})")
