"""Custom Triton kernels with plain-torch references, custom ops and ONNX translations.

    torch.ops.i2i.instance_norm_act      instance norm + affine + ReLU + residual
    torch.ops.i2i.instance_norm_hadain   instance norm + HAdaIN foreground/background blend
    torch.ops.i2i.add_mask_clamp         (clamp(x + s[n] * tanh(z), -1, 1), tanh(z)), s (N,)

use_fused_kernels(model) swaps them into a generator; ONNX_TRANSLATIONS is the
custom_translation_table for torch.onnx.export(dynamo=True).
"""

from __future__ import annotations

import torch

from .add_mask_clamp import add_mask_clamp, add_mask_clamp_onnx, add_mask_clamp_reference
from .fuse import use_fused_kernels
from .instance_norm_act import (
                                instance_norm_act,
                                instance_norm_act_onnx,
                                instance_norm_act_reference,
)
from .instance_norm_hadain import (
                                instance_norm_hadain,
                                instance_norm_hadain_onnx,
                                instance_norm_hadain_reference,
)

ONNX_TRANSLATIONS = {
    torch.ops.i2i.instance_norm_act.default: instance_norm_act_onnx,
    torch.ops.i2i.instance_norm_hadain.default: instance_norm_hadain_onnx,
    torch.ops.i2i.add_mask_clamp.default: add_mask_clamp_onnx,
}

__all__ = ["ONNX_TRANSLATIONS", "add_mask_clamp", "add_mask_clamp_reference",
           "instance_norm_act", "instance_norm_act_reference", "instance_norm_hadain",
           "instance_norm_hadain_reference", "use_fused_kernels"]
