"""Export: ONNX (fp32/fp16), TensorRT, AOTInductor and Triton Inference Server repositories."""
