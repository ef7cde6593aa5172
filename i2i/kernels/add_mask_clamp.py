"""add_mask_clamp: the additive model's output step in one pass over the data.

    m = tanh(z);  y[n] = clamp(x[n] + strength[n] * m[n], -1, 1)     returns (y, m)

x, z (N, C, H, W) of one dtype and one memory layout (both contiguous or both channels_last);
strength (N,) floating point, one value per row (per request in a served batch).
Exposed as torch.ops.i2i.add_mask_clamp(x, z, strength), strength a tensor: the op is a model
input in torch.compile, torch.export and the ONNX export. The Python call sites
launch_add_mask_clamp and add_mask_clamp_reference also take a float, meaning the same value
for every row.
"""

from __future__ import annotations

import torch

from ._triton import check_device, check_float, jit, runs_triton, tl, triton

BLOCK = 4096


@jit
def _add_mask_clamp_kernel(x_ptr, z_ptr,           # input image and pre-tanh mask, dense
                           s_ptr,                  # strength (N,), one per row
                           y_ptr, m_ptr,           # outputs, same layout as x
                           numel, row_numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    # The batch dimension is outermost in both NCHW and channels_last storage, so a flat offset
    # belongs to row offs // (C*H*W). A block may straddle rows: gather per element (cached).
    strength = tl.load(s_ptr + offs // row_numel, mask=valid, other=0.0).to(tl.float32)
    # tanh(z) = 1 - 2 / (exp(2z) + 1): exp overflowing to inf gives exactly 1, underflow -1.
    m = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)
    y = tl.minimum(tl.maximum(x + strength * m, -1.0), 1.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=valid)


def add_mask_clamp_reference(x: torch.Tensor, z: torch.Tensor,
                             strength: float | torch.Tensor = 1.0,
                             compute_dtype: torch.dtype | None = torch.float32
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch. Computes in `compute_dtype` (None: x's own dtype), returns x's dtype.

    `strength` is a float or an (N,) tensor. Its values are used as given (not first rounded
    to `compute_dtype`) and the product strength * m is rounded to `compute_dtype`, which is
    what torch does with a float strength: equal values give equal results either way."""
    dtype = compute_dtype or x.dtype
    m = torch.tanh(z.to(dtype))
    if isinstance(strength, torch.Tensor):
        check_strength(strength, x)
        scaled = (strength.reshape(-1, 1, 1, 1) * m).to(dtype)
    else:
        scaled = strength * m
    y = torch.clamp(x.to(dtype) + scaled, -1.0, 1.0)
    return y.to(x.dtype), m.to(x.dtype)


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def check_strength(strength: torch.Tensor, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if tuple(strength.shape) != (x.shape[0],):
        raise ValueError(f"strength must have shape (N,) = ({x.shape[0]},), one value per row "
                         f"of x, got {tuple(strength.shape)}")
    if not strength.is_floating_point():
        raise TypeError(f"strength must be a floating point tensor, got {strength.dtype}")
    check_device("strength", strength, x)


def check(x: torch.Tensor, z: torch.Tensor, strength: torch.Tensor) -> None:
    check_float("x", x)
    check_float("z", z)
    check_device("z", z, x)
    if x.shape != z.shape:
        raise ValueError(f"x and z must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(z.shape)}")
    if x.dtype != z.dtype:
        raise TypeError(f"x and z must have the same dtype, got {x.dtype} and {z.dtype}")
    check_strength(strength, x)


def strength_tensor(strength: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float as an (N,) float32 tensor on x's device; a tensor as it is (check() judges it)."""
    if isinstance(strength, torch.Tensor):
        return strength
    return torch.full(x.shape[:1], float(strength), dtype=torch.float32, device=x.device)


def launch_add_mask_clamp(x: torch.Tensor, z: torch.Tensor,
                          strength: float | torch.Tensor = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the arguments and run the Triton kernel over the raw storage of x and z.

    `strength`: a float (every row) or an (N,) floating point tensor on x's device."""
    strength = strength_tensor(strength, x)
    check(x, z, strength)
    if not (_dense(x) and x.stride() == z.stride()):
        raise ValueError("add_mask_clamp reads x and z as flat memory: both must be contiguous "
                         "or both channels_last (call .contiguous() on them); got strides "
                         f"{x.stride()} and {z.stride()}")
    if triton is None:
        raise RuntimeError("triton is not installed; install i2i[dev] or a CUDA build of torch")
    y, m = torch.empty_like(x), torch.empty_like(x)       # keep x's memory layout
    if x.numel():
        # Dense in either layout with numel > 0: row n starts at n * C*H*W (stride(0) is
        # C*H*W whenever N > 1), so the kernel finds the row from the flat offset.
        grid = (triton.cdiv(x.numel(), BLOCK),)
        _add_mask_clamp_kernel[grid](x, z, strength.contiguous(), y, m, x.numel(),
                                     x.numel() // x.shape[0], BLOCK=BLOCK)
    return y, m


@torch.library.custom_op("i2i::add_mask_clamp", mutates_args=())
def add_mask_clamp(x: torch.Tensor, z: torch.Tensor, strength: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    if runs_triton(x):
        return launch_add_mask_clamp(x, z, strength)
    check(x, z, strength)
    return add_mask_clamp_reference(x, z, strength)


@add_mask_clamp.register_fake
def _(x, z, strength):
    check(x, z, strength)
    return torch.empty_like(x), torch.empty_like(x)


def add_mask_clamp_onnx(x, z, strength):
    """ONNX translation: Tanh, Mul by the per-row strength reshaped to (N, 1, 1, 1), Add, Clip."""
    from onnxscript import opset18 as op

    m = op.Tanh(z)
    per_row = op.Reshape(strength, op.Constant(value_ints=[-1, 1, 1, 1]))
    scaled = op.Mul(m, op.CastLike(per_row, x))
    low = op.CastLike(op.Constant(value_float=-1.0), x)
    high = op.CastLike(op.Constant(value_float=1.0), x)
    return op.Clip(op.Add(x, scaled), low, high), m
