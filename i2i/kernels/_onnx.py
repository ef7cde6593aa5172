"""Shared pieces of the ONNX translations of the kernels' custom ops (onnxscript, opset 18)."""

from __future__ import annotations


def instance_norm(x, eps: float):
    """InstanceNormalization with unit scale and zero bias, whatever the channel count."""
    from onnxscript import opset18 as op

    channels = op.Shape(x, start=1, end=2)                       # (1,) int64: C
    one = op.CastLike(op.Constant(value_float=1.0), x)
    zero = op.CastLike(op.Constant(value_float=0.0), x)
    return op.InstanceNormalization(x, op.Expand(one, channels), op.Expand(zero, channels),
                                    epsilon=eps)
