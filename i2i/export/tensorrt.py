"""TensorRT engines built from ONNX graphs: model.plan from the fp16 one, model.int8.plan from
the int8 QDQ one.

Precision comes from the graph, not from builder flags: TensorRT 10.12 deprecated and
TensorRT 11 removed `BuilderFlag.FP16`, so the engine is built as a STRONGLY TYPED network
from an ONNX graph that is already fp16 (`model.fp16.onnx`, whose InstanceNormalization runs
in fp32 between casts). Every tensor keeps the type the graph gives it: TensorRT cannot
silently move a layer to another precision.

One optimisation profile covers every input: a (min, opt, max) full shape per input, batch
included. The timing cache (layer timings measured while building) is loaded from and saved
to a file beside the plan, so rebuilding on the same machine skips most of the timing.

int8 is EXPLICIT quantization: the plan is built, strongly typed like the fp16 one, from
model.int8.onnx, whose QuantizeLinear/DequantizeLinear pairs carry the scales calibrated on the
model's domain (i2i.export.quantize, the same calibration images as the CPU engines). TensorRT
10.1 deprecated its implicit path (IInt8EntropyCalibrator2 and the other calibrators,
BuilderFlag.INT8, config.int8_calibrator) in favour of Q/DQ graphs, and TensorRT 11 removed it;
building from the QDQ graph also gives TensorRT onnxruntime's scales, so those two int8
artifacts differ only in their kernels. TensorRT takes symmetric scales only, which is why that
graph is symmetric (zero points 0); OpenVINO's int8 graph is another (i2i.export.quantize).

A plan only runs with the TensorRT version that built it, on a GPU of the same compute
capability; build_engine returns those facts for the manifest, and
i2i.engines.tensorrt.check_plan_compatible compares them with the machine that loads the plan.

Written against the TensorRT 10.x/11.x Python API; building needs a CUDA GPU.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..atomic import write_bytes
from ..engines.tensorrt import _import_tensorrt, _version_tuple, availability, current_machine

Shape = tuple[int, ...]


def build_engine(onnx_path: Path, plan_path: Path,
                 shapes: dict[str, tuple[Shape, Shape, Shape]],
                 timing_cache: Path | None = None, workspace_bytes: int = 4 << 30,
                 allow_fp32: bool = False) -> dict:
    """Build `plan_path` from `onnx_path`; returns the facts the manifest records.

    shapes: input name -> (min, opt, max) full shapes including the batch dimension, e.g.
    {"image": ((1, 3, 256, 256), (8, 3, 256, 256), (16, 3, 256, 256))}. The timing cache
    defaults to `timing.cache` beside the plan. An ONNX graph with neither a float16 tensor nor
    Q/DQ pairs is refused (it would give an fp32 engine) unless allow_fp32 is set.
    """
    reason = availability()
    if reason is not None:
        raise RuntimeError(f"cannot build a TensorRT engine on this machine: {reason}")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist; export it first")
    precision = onnx_precision(onnx_path)
    if precision == "float32" and not allow_fp32:
        raise ValueError(f"{onnx_path} holds no float16 tensor and no Q/DQ pair: a strongly "
                         f"typed build of it gives an fp32 engine. Pass the fp16 graph "
                         f"(model.fp16.onnx) or the int8 one (model.int8.onnx), or "
                         f"allow_fp32=True if an fp32 engine is what you want")
    if workspace_bytes < 1:
        raise ValueError(f"workspace_bytes must be positive, got {workspace_bytes}")

    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT {trt.__version__} could not parse {onnx_path} "
                           f"({len(errors)} errors):\n  " + "\n  ".join(errors))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    check_profile(shapes, {t.name: tuple(t.shape) for t in inputs})

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, tuple(low), tuple(opt), tuple(high))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else plan_path.parent / "timing.cache"
    _attach_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build an engine from "
                           f"{onnx_path}; its log above says why (often: workspace_bytes too "
                           f"small, or a shape range the graph cannot take)")
    # TensorRT's IHostMemory is a bytes-like object.
    write_bytes(plan_path, bytes(memoryview(serialized)))
    write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    here = current_machine()
    return {"tensorrt": trt.__version__, "gpu": here["gpu"],
            "compute_capability": here["compute_capability"],
            "profile": {name: {"min": list(low), "opt": list(opt), "max": list(high)}
                        for name, (low, opt, high) in shapes.items()},
            "strongly_typed": True, "graph_precision": precision}


def check_profile(shapes: dict[str, tuple[Shape, Shape, Shape]],
                  network_inputs: dict[str, Shape]) -> None:
    """ValueError unless `shapes` gives a valid (min, opt, max) for exactly the network's inputs.

    network_inputs: name -> shape with -1 for dynamic dimensions, as TensorRT parsed it.
    """
    missing = sorted(set(network_inputs) - set(shapes))
    unknown = sorted(set(shapes) - set(network_inputs))
    if missing or unknown:
        raise ValueError(f"shapes must name every network input exactly: missing {missing}, "
                         f"unknown {unknown} (the network's inputs: {sorted(network_inputs)})")
    for name, triple in shapes.items():
        dims = tuple(network_inputs[name])
        if len(triple) != 3:
            raise ValueError(f"shapes[{name!r}] must be (min, opt, max), got {triple}")
        low, opt, high = (tuple(s) for s in triple)
        if not len(low) == len(opt) == len(high) == len(dims):
            raise ValueError(f"shapes[{name!r}] = {triple}: every shape needs {len(dims)} "
                             f"dimensions, like the input {dims}")
        for axis, (d, lo, op, hi) in enumerate(zip(dims, low, opt, high, strict=True)):
            if not 1 <= lo <= op <= hi:
                raise ValueError(f"shapes[{name!r}] axis {axis}: need 1 <= min <= opt <= max, "
                                 f"got {lo}, {op}, {hi}")
            if d != -1 and not lo == op == hi == d:
                raise ValueError(f"shapes[{name!r}] axis {axis} is fixed at {d} in the graph; "
                                 f"min, opt and max must all be {d}, got {lo}, {op}, {hi}")


def onnx_precision(onnx_path: Path) -> str:
    """The graph's precision: int8 if it holds QuantizeLinear nodes (explicit quantization),
    float16 if it holds any float16 tensor (weights, I/O, casts), else float32."""
    import onnx

    fp16 = onnx.TensorProto.FLOAT16
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if any(node.op_type == "QuantizeLinear" for node in graph.node):
        return "int8"
    if any(t.data_type == fp16 for t in graph.initializer):
        return "float16"
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(v.type.tensor_type.elem_type == fp16 for v in values):
        return "float16"
    for node in graph.node:
        for attr in node.attribute:
            if (node.op_type == "Cast" and attr.name == "to" and attr.i == fp16) or (
                    attr.name == "value" and attr.t.data_type == fp16):
                return "float16"
    return "float32"


def _network_flags(trt: ModuleType) -> int:
    # TensorRT 11 types every network strongly and only keeps the flag as a deprecated no-op;
    # on 10.x it must be asked for.
    if _version_tuple(trt.__version__) >= (11, 0):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _attach_timing_cache(config, path: Path) -> None:
    """Start from the cache file when it fits this TensorRT and GPU, else from an empty one."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = None
    try:
        cache = config.create_timing_cache(blob)
    except (RuntimeError, TypeError, ValueError):
        cache = None
    # ignore_mismatch=False: timings measured on another GPU or version would mislead the build.
    if cache is None or not config.set_timing_cache(cache, False):
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _describe_parser_error(error) -> str:
    where = f"node {error.node()}"
    name = getattr(error, "node_name", None)           # TensorRT >= 10 names the node
    operator = getattr(error, "node_operator", None)
    if name is not None and operator is not None and name():
        where += f" {name()!r} ({operator()})"
    return f"{where}: {error.code()}: {error.desc()}"
