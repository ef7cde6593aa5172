"""Export: ONNX (fp32/fp16), TensorRT, AOTInductor and Triton Inference Server repositories,
each parity-gated against eager PyTorch and described by manifest.json.

    from i2i.export import ExportOptions, build
    out = build("runs/x/checkpoints/step_002000.safetensors", ExportOptions(fp16=True))
"""

from .build import ExportOptions, ParityError, build, find_checkpoint
from .manifest import read_manifest

__all__ = ["ExportOptions", "ParityError", "build", "find_checkpoint", "read_manifest"]
