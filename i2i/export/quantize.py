"""The int8 graphs: static QDQ quantization of the fp32 ONNX graph, calibrated on domain images.

    model.onnx --(calibration batches)--> model.int8.onnx            onnxruntime, TensorRT
    model.onnx --(calibration batches)--> model.int8.openvino.onnx   OpenVINO

onnxruntime's quantizer inserts QuantizeLinear/DequantizeLinear pairs around convolutions
(ConvTranspose included): weights per output channel, signed and symmetric; activations per
tensor. The two graphs differ in where the activation pairs go and how they are ranged
(LAYOUTS), because the engines' int8 kernels want different things:

    model.int8.onnx            the inputs AND outputs of each convolution, signed int8,
                               symmetric (zero point 0). onnxruntime turns a convolution into
                               an int8 one only when its output is quantized too (DQ -> Conv ->
                               Q becomes QLinearConv); TensorRT's explicit quantization takes
                               symmetric scales only.
    model.int8.openvino.onnx   the inputs of each convolution only, unsigned and asymmetric.
                               OpenVINO fuses DQ -> Conv into an int8 convolution (u8 x s8)
                               whatever follows it.

The openvino layout is the more accurate by 4-6 dB on the full additive generator (256x256,
ngf 64, 9 blocks, seeded weights; its `strength` signature's translation: 27.5 dB in the first
layout, 33.1 dB in the second), for two reasons:
- A convolution's output feeds an instance norm, which scales every channel to unit variance: a
  channel of small values, left a few levels by the one per-tensor scale, has its rounding
  error scaled up with it. Quantizing the outputs alone costs the first layout about 1.8 dB.
- Most convolution inputs come out of a ReLU and are never negative: symmetric signed int8 spends
  half its levels on values that never occur, where unsigned asymmetric int8 uses them all.
Its speed under OpenVINO is the same (183 against 164-205 ms a picture on the 2-core EPYC);
under onnxruntime the openvino layout would run its convolutions in fp32 on dequantized values,
slower than the fp32 graph (861 against 623 ms), which is why onnxruntime keeps the first.

An activation's range is a high percentile of the values the calibration batches reach (of
their absolute values where symmetric): the few largest values, at sharp edges of flat
pictures, would otherwise stretch the range and leave the bulk of a tensor a handful of levels.
Against the min/max range the 99.99th percentile gained 1-2.7 dB on every model tried (seeded
weights, synthetic domain images: additive 35.7 -> 37.8 dB, Mask CycleGAN 31.8 -> 33.7, LOMIT
33.1 -> 35.8; the full additive generator 27.1 -> 29.5); with asymmetric ranges the 99.999th
gains 1.6 dB more on the full generator (31.5 -> 33.1 dB).

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Layout:
    """Where one int8 graph puts its activation pairs, and how it ranges them."""

    suffix: str                 # after the signature's stem: model.int8.onnx
    symmetric: bool             # signed int8, zero point 0 (else unsigned, asymmetric)
    outputs: bool               # convolution outputs quantized too, not only their inputs
    percentile: float           # an activation's range: this percentile of the calibration's
    engines: str

    def describe(self) -> str:
        signs = "signed symmetric" if self.symmetric else "unsigned asymmetric"
        where = "inputs and outputs" if self.outputs else "inputs"
        return (f"static QDQ (onnxruntime quantize_static) for {self.engines}: Conv/"
                f"ConvTranspose with at least {MIN_INPUT_CHANNELS} input channels in int8, "
                f"weights per channel, signed symmetric; activations ({where}) per tensor, "
                f"{signs}, ranges at the {self.percentile}th percentile of the calibration "
                "activations")


LAYOUTS = {
    "onnxruntime": Layout(".int8.onnx", symmetric=True, outputs=True, percentile=99.99,
                          engines="onnxruntime and TensorRT"),
    "openvino": Layout(".int8.openvino.onnx", symmetric=False, outputs=False,
                       percentile=99.999, engines="OpenVINO"),
}


class _Reader(CalibrationDataReader):
    """The calibration batches, {input name: (1, C, H, W) float32 array} one at a time."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self._feeds = iter([{k: v.float().numpy() for k, v in b.items()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def to_int8(src: Path, dst: Path, batches: list[dict[str, torch.Tensor]],
            layout: Layout = LAYOUTS["onnxruntime"]) -> dict:
    """Write the int8 QDQ graph of `src` in `layout` to `dst`, calibrated on `batches`;
    manifest facts."""
    if not batches:
        raise ValueError("int8 quantization needs at least one calibration batch")
    kept = narrow_convolutions(onnx.load(str(src)))
    options = {"ActivationSymmetric": layout.symmetric, "WeightSymmetric": True,
               "CalibPercentile": layout.percentile}
    if not layout.outputs:
        options["OpTypesToExcludeOutputQuantization"] = QUANTIZED_OPS
    with _quiet():
        quantize_static(str(src), str(dst), _Reader(batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                        activation_type=QuantType.QInt8 if layout.symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=kept,
                        extra_options=options)
    onnx.checker.check_model(str(dst))
    pairs = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(dst)).graph.node)
    return {"method": layout.describe(), "quantized_ops": QUANTIZED_OPS, "quantize_nodes": pairs,
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
