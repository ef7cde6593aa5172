"""instance_norm_hadain: instance norm followed by LOMIT's Highway AdaIN blend, in one pass.

    xn  = (x - mean) / sqrt(var + eps)      mean, biased var over H*W for each (n, c)
    out = m * (gamma_fg * xn + beta_fg) + (1 - m) * (gamma_bg * xn + beta_bg)

x (N, C, H, W); mask m (N, 1, H, W) in [0, 1], broadcast over channels; gammas and betas
(N, C): each sample's foreground style (from the exemplar) and background style (from the
input). Exposed as torch.ops.i2i.instance_norm_hadain. The eager composition makes 10-18 passes
over the activations; the kernel reads x and m once and writes out once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _norm
from ._triton import runs_triton


def instance_norm_hadain_reference(x: torch.Tensor, mask: torch.Tensor,
                                   gamma_fg: torch.Tensor, beta_fg: torch.Tensor,
                                   gamma_bg: torch.Tensor, beta_bg: torch.Tensor,
                                   eps: float = 1e-5,
                                   compute_dtype: torch.dtype | None = torch.float32
                                   ) -> torch.Tensor:
    """Plain torch. Computes in `compute_dtype` (None: x's own dtype) and returns x's dtype."""
    dtype = compute_dtype or x.dtype
    xn = F.instance_norm(x.to(dtype), eps=eps)
    m = mask.to(dtype)

    def style(t):                                    # (N, C) -> (N, C, 1, 1)
        return t.to(dtype)[:, :, None, None]

    fg = style(gamma_fg) * xn + style(beta_fg)
    bg = style(gamma_bg) * xn + style(beta_bg)
    return (m * fg + (1 - m) * bg).to(x.dtype)


def check(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg) -> None:
    _norm.check_x(x)
    N, C, H, W = x.shape
    _norm.check_like("mask", mask, (N, 1, H, W), x)
    for name, t in (("gamma_fg", gamma_fg), ("beta_fg", beta_fg), ("gamma_bg", gamma_bg),
                    ("beta_bg", beta_bg)):
        _norm.check_like(name, t, (N, C), x)


def launch_instance_norm_hadain(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg, eps=1e-5,
                                chunk: int | None = None, block: int | None = None
                                ) -> torch.Tensor:
    """Check the arguments and run the Triton kernel."""
    check(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg)
    styles = tuple(t.contiguous() for t in (gamma_fg, beta_fg, gamma_bg, beta_bg))
    return _norm.launch(x, eps, hadain=(mask, *styles), chunk=chunk, block=block)


@torch.library.custom_op("i2i::instance_norm_hadain", mutates_args=())
def instance_norm_hadain(x: torch.Tensor, mask: torch.Tensor, gamma_fg: torch.Tensor,
                         beta_fg: torch.Tensor, gamma_bg: torch.Tensor, beta_bg: torch.Tensor,
                         eps: float = 1e-5) -> torch.Tensor:
    if runs_triton(x):
        return launch_instance_norm_hadain(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg, eps)
    check(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg)
    return instance_norm_hadain_reference(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg, eps)


@instance_norm_hadain.register_fake
def _(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg, eps=1e-5):
    check(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg)
    return torch.empty_like(x)


def instance_norm_hadain_onnx(x, mask, gamma_fg, beta_fg, gamma_bg, beta_bg, eps=1e-5):
    """ONNX translation: InstanceNormalization, then the blend with Mul/Add/Sub."""
    from onnxscript import opset18 as op

    from ._onnx import instance_norm
    xn = instance_norm(x, eps)
    axes = op.Constant(value_ints=[2, 3])

    def style(t):                                    # (N, C) -> (N, C, 1, 1) in x's dtype
        return op.Unsqueeze(op.CastLike(t, x), axes)

    m = op.CastLike(mask, x)
    fg = op.Add(op.Mul(style(gamma_fg), xn), style(beta_fg))
    bg = op.Add(op.Mul(style(gamma_bg), xn), style(beta_bg))
    return op.Add(op.Mul(m, fg), op.Mul(op.Sub(op.CastLike(op.Constant(value_float=1.0), x), m),
                                       bg))
