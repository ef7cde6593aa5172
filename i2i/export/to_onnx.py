"""ONNX export through the dynamo exporter, and the fp16 graph derived from it.

fp32: `torch.onnx.export(dynamo=True)`, opset 18, inputs and outputs named by the model spec,
a dynamic batch dimension and, where the architecture allows, dynamic height and width
(multiples of the spec's size_multiple); i2i's custom kernel ops are translated to standard ops.

fp16: every float initializer and computation in fp16, except InstanceNormalization, which
runs in fp32 between casts so that its statistics stay accurate (fp16 variances overflow for
activations in the hundreds). Inputs and outputs stay float32 unless fp16_io is asked for:
the casts at the boundary are inserted here, because converting with keep_io_types breaks
graphs in which an input also feeds a later op directly (the additive model's x + m).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from ..kernels import ONNX_TRANSLATIONS
from ..models.spec import ModelSpec
from .wrap import Positional, check_shared_dims, example_inputs

OPSET = 18
FP32_OPS = ["InstanceNormalization"]         # kept in fp32 inside the fp16 graph


def export_onnx(module: nn.Module, spec: ModelSpec, path: Path, batch: tuple[int, int, int],
                size: tuple[int, int], dynamic_size: bool = True, opset: int = OPSET) -> dict:
    """Write `path`; returns manifest facts (opset, dynamic dims, I/O names)."""
    wrapped = Positional(module.eval(), spec).eval()
    # torch.export specialises a dimension seen as 0 or 1: trace with at least 2. H and W are
    # traced at no fewer than 2 blocks of size_multiple for the same reason: at exactly one block
    # a U-Net's bottleneck is 1x1 (unet_256 at 256x256), which would pin H and W to that size.
    # The graph's ops (convolutions, norms, concatenations) take any number of blocks, one
    # included; the parity gate then runs it at the requested size.
    m = spec.size_multiple
    traced = tuple(max(s, 2 * m) for s in size) if dynamic_size else size
    example = example_inputs(spec, max(2, batch[1]), traced)
    batch_dim = torch.export.Dim("batch", min=max(1, batch[0]), max=max(2, batch[2]))
    dims: dict[int, object] = {0: batch_dim}
    if dynamic_size:
        dims[2] = m * torch.export.Dim("height_blocks", min=1, max=max(2, 8192 // m))
        dims[3] = m * torch.export.Dim("width_blocks", min=1, max=max(2, 8192 // m))
    # knobs (N, 1) share only the batch dimension
    shapes = tuple(dict(dims) if t.spatial else {0: batch_dim} for t in spec.inputs)
    # The exporter logs one line per torchvision op it cannot find; i2i uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
        # Every input shares the batch, height and width dims; the exporter names them once and
        # warns about each repeat.
        warnings.filterwarnings("ignore", category=UserWarning, message=".*shares the same shape")
        program = torch.onnx.export(
            wrapped, tuple(example.values()), dynamo=True, opset_version=opset,
            input_names=wrapped.input_names, output_names=wrapped.output_names,
            dynamic_shapes=(shapes,),                               # forward(*inputs)
            custom_translation_table=ONNX_TRANSLATIONS, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    onnx.checker.check_model(str(path))
    return {"opset": opset, "dynamic": ["batch", "height", "width"] if dynamic_size else
            ["batch"], "inputs": wrapped.input_names, "outputs": wrapped.output_names}


def to_fp16(src: Path, dst: Path, fp16_io: bool = False) -> dict:
    """Convert an fp32 ONNX file to fp16 (InstanceNormalization kept in fp32)."""
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + FP32_OPS
    with warnings.catch_warnings():
        # Weights below fp16's smallest normal are flushed, one warning each; the parity gate
        # measures what that costs.
        warnings.filterwarnings("ignore", message=".*will be truncated to", category=UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=False,
                                                op_block_list=block, disable_shape_infer=False)
    if not fp16_io:
        _cast_io_to_float32(half)
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))
    return {"io_dtype": "float16" if fp16_io else "float32", "fp32_ops": FP32_OPS}


def _cast_io_to_float32(model: onnx.ModelProto) -> None:
    """Give an fp16-I/O graph float32 inputs and outputs, casting at the boundary."""
    graph = model.graph
    casts_in = [_retype(graph, value, output=False) for value in _half(graph.input)]
    casts_out = [_retype(graph, value, output=True) for value in _half(graph.output)]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)


def _half(values) -> list:
    return [v for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT16]


def _retype(graph: onnx.GraphProto, value, output: bool) -> onnx.NodeProto:
    """Make the graph input or output `value` float32: its fp16 tensor is renamed inside the
    graph, and the returned Cast node converts between the two at the boundary."""
    inner = f"{value.name}__fp16"
    for node in graph.node:
        node.input[:] = [inner if name == value.name else name for name in node.input]
        if output:
            node.output[:] = [inner if name == value.name else name for name in node.output]
    value.type.tensor_type.elem_type = TensorProto.FLOAT
    if output:
        return helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT,
                                name=f"{value.name}__to_fp32")
    return helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16,
                            name=f"{value.name}__to_fp16")


def onnx_runner(path: Path, threads: int | None = None):
    """{name: tensor} -> {name: tensor} through onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    dtypes = {i.name: i.type for i in session.get_inputs()}
    shapes = {i.name: i.shape for i in session.get_inputs()}     # int: fixed; str/None: dynamic

    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if sorted(inputs) != sorted(dtypes):
            raise ValueError(f"{path} takes inputs {sorted(dtypes)}, got {sorted(inputs)}")
        for name, x in inputs.items():
            _check_fixed_dims(name, tuple(x.shape), shapes[name], path)
        check_shared_dims(inputs, path)
        feed = {k: v.detach().cpu().numpy().astype("float16" if dtypes[k] == "tensor(float16)"
                                                     else "float32") for k, v in inputs.items()}
        return {n: torch.from_numpy(v).float() for n, v in zip(names, session.run(names, feed),
                                                              strict=True)}
    return run


def _check_fixed_dims(name: str, shape: tuple[int, ...], declared: list, path: Path) -> None:
    """ValueError unless `shape` has the graph input's rank and its fixed dims (channels)."""
    fixed = [d if isinstance(d, int) else None for d in declared]
    if len(shape) != len(fixed) or any(d is not None and d != s
                                       for d, s in zip(fixed, shape, strict=True)):
        listed = ", ".join("?" if d is None else str(d) for d in declared)
        raise ValueError(f"input {name!r} has shape {shape}; {path} takes ({listed}) for it")
