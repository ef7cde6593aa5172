"""instance_norm_act: instance norm -> optional per-channel affine -> optional ReLU -> optional
residual add, in one read and one write. Every conv-norm-act and conv-norm-add step of the
ResNet generator is one call:

    y = IN(x) * weight + bias;  y = relu(y) if relu;  y = y + residual if residual is given

exposed as torch.ops.i2i.instance_norm_act.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _norm
from ._triton import runs_triton


def instance_norm_act_reference(x: torch.Tensor, weight: torch.Tensor | None = None,
                                bias: torch.Tensor | None = None,
                                residual: torch.Tensor | None = None, relu: bool = True,
                                eps: float = 1e-5,
                                compute_dtype: torch.dtype | None = torch.float32
                                ) -> torch.Tensor:
    """Plain torch. Computes in `compute_dtype` (None: x's own dtype) and returns x's dtype."""
    dtype = compute_dtype or x.dtype
    y = F.instance_norm(x.to(dtype), eps=eps)
    if weight is not None:
        y = y * weight.to(dtype).view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(dtype).view(1, -1, 1, 1)
    if relu:
        y = torch.relu(y)
    if residual is not None:
        y = y + residual.to(dtype)
    return y.to(x.dtype)


def launch_instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None,
                             bias: torch.Tensor | None = None,
                             residual: torch.Tensor | None = None, relu: bool = True,
                             eps: float = 1e-5, chunk: int | None = None,
                             block: int | None = None) -> torch.Tensor:
    """Check the arguments and run the Triton kernel."""
    check(x, weight, bias, residual)
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    return _norm.launch(x, eps, weight=weight, bias=bias, relu=relu, residual=residual,
                        chunk=chunk, block=block)


def check(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
          residual: torch.Tensor | None) -> None:
    _norm.check_x(x)
    C = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _norm.check_like(name, t, (C,), x)
    if residual is not None:
        _norm.check_like("residual", residual, tuple(x.shape), x)


@torch.library.custom_op("i2i::instance_norm_act", mutates_args=())
def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                      relu: bool = True, eps: float = 1e-5) -> torch.Tensor:
    if runs_triton(x):
        return launch_instance_norm_act(x, weight, bias, residual, relu, eps)
    check(x, weight, bias, residual)
    return instance_norm_act_reference(x, weight, bias, residual, relu, eps)


@instance_norm_act.register_fake
def _(x, weight=None, bias=None, residual=None, relu=True, eps=1e-5):
    check(x, weight, bias, residual)
    return torch.empty_like(x)


def instance_norm_act_onnx(x, weight=None, bias=None, residual=None, relu=True, eps=1e-5):
    """ONNX translation: InstanceNormalization (+ Mul/Add for the affine) + Relu + Add."""
    from onnxscript import opset18 as op

    from ._onnx import instance_norm
    y = instance_norm(x, eps)
    if weight is not None:
        y = op.Mul(y, op.Unsqueeze(op.CastLike(weight, x), [1, 2]))
    if bias is not None:
        y = op.Add(y, op.Unsqueeze(op.CastLike(bias, x), [1, 2]))
    if relu:
        y = op.Relu(y)
    if residual is not None:
        y = op.Add(y, residual)
    return y
