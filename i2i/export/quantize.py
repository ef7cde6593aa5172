"""The int8 graph: static QDQ quantization of the fp32 ONNX graph, calibrated on domain images.

    model.onnx --(calibration batches)--> model.int8.onnx

onnxruntime's quantizer inserts QuantizeLinear/DequantizeLinear pairs around the inputs and
weights of every convolution (ConvTranspose included): weights per output channel, activations
per tensor, both signed int8 and SYMMETRIC (zero point 0). Symmetric activations cost about
1 dB of PSNR against asymmetric ones on the additive generator, and buy one graph that every
engine runs: onnxruntime and OpenVINO fuse the pairs into int8 convolutions, and TensorRT,
whose explicit quantization takes only symmetric scales, builds its int8 plan from the same
file. An activation's range is the 99.99th percentile of the absolute values the calibration
batches reach (PERCENTILE): the few largest values, at sharp edges of flat pictures, would
otherwise stretch the range and leave the bulk of a channel a handful of levels. Against the
min/max range it gained 1-2.7 dB on every model tried (seeded weights, synthetic domain images:
additive 35.7 -> 37.8 dB, Mask CycleGAN 31.8 -> 33.7, LOMIT 33.1 -> 35.8; the full 256x256
additive generator 27.1 -> 29.5).

Everything else (instance norms, tanh, the additive x + m) stays fp32 between the pairs: the
norms' statistics would lose most of their precision in 8 bits. So do convolutions with fewer
than MIN_INPUT_CHANNELS input channels (the stem reading the picture, Mask CycleGAN's 1x1
encoders of [x * m, m]): they are about 1% of the work, the most sensitive layers, and
OpenVINO's int8 convolution after such a concatenation of differently ranged inputs lost 12 dB
that onnxruntime did not (Mask CycleGAN: 18 dB against 31 dB; 31 dB in both with those two
convolutions kept in fp32).

The quantizer's shape-inference pre-processing step is skipped: it fails on graphs with
dynamic height and width ("Incomplete symbolic shape inference"), and the QDQ pass does not
need it for convolutions.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

QUANTIZED_OPS = ["Conv", "ConvTranspose"]
MIN_INPUT_CHANNELS = 8
PERCENTILE = 99.99
METHOD = ("static QDQ (onnxruntime quantize_static): Conv/ConvTranspose with at least "
          f"{MIN_INPUT_CHANNELS} input channels in int8, weights per channel, activations per "
          f"tensor, symmetric, ranges at the {PERCENTILE}th percentile of the calibration "
          "activations")


class _Reader(CalibrationDataReader):
    """The calibration batches, {input name: (1, C, H, W) float32 array} one at a time."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self._feeds = iter([{k: v.float().numpy() for k, v in b.items()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def to_int8(src: Path, dst: Path, batches: list[dict[str, torch.Tensor]]) -> dict:
    """Write the int8 QDQ graph of `src` to `dst`, calibrated on `batches`; manifest facts."""
    if not batches:
        raise ValueError("int8 quantization needs at least one calibration batch")
    kept = narrow_convolutions(onnx.load(str(src)))
    with _quiet():
        quantize_static(str(src), str(dst), _Reader(batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=kept,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibPercentile": PERCENTILE})
    onnx.checker.check_model(str(dst))
    pairs = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(dst)).graph.node)
    return {"method": METHOD, "quantized_ops": QUANTIZED_OPS, "quantize_nodes": pairs,
            "kept_fp32": kept}


def narrow_convolutions(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv/ConvTranspose nodes with fewer than MIN_INPUT_CHANNELS input channels
    (read off their weights: Conv (out, in / groups, kH, kW), ConvTranspose (in, ...))."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    narrow = []
    for node in model.graph.node:
        weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type not in QUANTIZED_OPS or not weight:
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        channels = weight[0] if node.op_type == "ConvTranspose" else weight[1] * groups
        if channels < MIN_INPUT_CHANNELS:
            narrow.append(node.name)
    return narrow


@contextmanager
def _quiet():
    """The quantizer logs through the root logger: a request to run the pre-processing step
    (skipped on purpose, see above) on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
