"""Export: ONNX (fp32/fp16), TensorRT, AOTInductor and Triton Inference Server repositories for
every signature of a model, each gated for parity against eager PyTorch through the engine
class that serves it, and described by manifest.json (i2i.manifest).

    from i2i.export import ExportOptions, build
    out = build("runs/x/checkpoints/step_002000.safetensors", ExportOptions(fp16=True))
"""

from ..manifest import read_manifest
from .build import ExportOptions, ParityError, build, find_checkpoint

__all__ = ["ExportOptions", "ParityError", "build", "find_checkpoint", "read_manifest"]
