"""add_mask_clamp: the additive model's output step in one pass over the data.

    m = tanh(z);  y = clamp(x + strength * m, -1, 1)     returns (y, m)

x, z (N, C, H, W) of one dtype and one memory layout (both contiguous or both channels_last).
Exposed as torch.ops.i2i.add_mask_clamp.
"""

from __future__ import annotations

import torch

from ._triton import check_device, check_float, jit, runs_triton, tl, triton

BLOCK = 4096


@jit
def _add_mask_clamp_kernel(x_ptr, z_ptr,           # input image and pre-tanh mask, dense
                           y_ptr, m_ptr,           # outputs, same layout as x
                           numel, strength, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    # tanh(z) = 1 - 2 / (exp(2z) + 1): exp overflowing to inf gives exactly 1, underflow -1.
    m = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)
    y = tl.minimum(tl.maximum(x + strength * m, -1.0), 1.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=valid)


def add_mask_clamp_reference(x: torch.Tensor, z: torch.Tensor, strength: float = 1.0,
                             compute_dtype: torch.dtype | None = torch.float32
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch. Computes in `compute_dtype` (None: x's own dtype), returns x's dtype."""
    dtype = compute_dtype or x.dtype
    m = torch.tanh(z.to(dtype))
    y = torch.clamp(x.to(dtype) + strength * m, -1.0, 1.0)
    return y.to(x.dtype), m.to(x.dtype)


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def check(x: torch.Tensor, z: torch.Tensor) -> None:
    check_float("x", x)
    check_float("z", z)
    check_device("z", z, x)
    if x.shape != z.shape:
        raise ValueError(f"x and z must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(z.shape)}")
    if x.dtype != z.dtype:
        raise TypeError(f"x and z must have the same dtype, got {x.dtype} and {z.dtype}")


def launch_add_mask_clamp(x: torch.Tensor, z: torch.Tensor, strength: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the arguments and run the Triton kernel over the raw storage of x and z."""
    check(x, z)
    if not (_dense(x) and x.stride() == z.stride()):
        raise ValueError("add_mask_clamp reads x and z as flat memory: both must be contiguous "
                         "or both channels_last (call .contiguous() on them); got strides "
                         f"{x.stride()} and {z.stride()}")
    if triton is None:
        raise RuntimeError("triton is not installed; install i2i[dev] or a CUDA build of torch")
    y, m = torch.empty_like(x), torch.empty_like(x)       # keep x's memory layout
    if x.numel():
        grid = (triton.cdiv(x.numel(), BLOCK),)
        _add_mask_clamp_kernel[grid](x, z, y, m, x.numel(), float(strength), BLOCK=BLOCK)
    return y, m


@torch.library.custom_op("i2i::add_mask_clamp", mutates_args=())
def add_mask_clamp(x: torch.Tensor, z: torch.Tensor, strength: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    if runs_triton(x):
        return launch_add_mask_clamp(x, z, strength)
    check(x, z)
    return add_mask_clamp_reference(x, z, strength)


@add_mask_clamp.register_fake
def _(x, z, strength=1.0):
    check(x, z)
    return torch.empty_like(x), torch.empty_like(x)


def add_mask_clamp_onnx(x, z, strength=1.0):
    """ONNX translation: Tanh, Mul, Add, Clip."""
    from onnxscript import opset18 as op

    m = op.Tanh(z)
    scaled = op.Mul(m, op.CastLike(op.Constant(value_float=float(strength)), x))
    low = op.CastLike(op.Constant(value_float=-1.0), x)
    high = op.CastLike(op.Constant(value_float=1.0), x)
    return op.Clip(op.Add(x, scaled), low, high), m
