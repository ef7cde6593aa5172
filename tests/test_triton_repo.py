"""Triton model repository: config.pbtxt checked against Triton's own ModelConfig schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from i2i.export.triton_repo import IOTensor, config_text, io_from_onnx, write_repository

TRITON_TYPES = {TensorProto.FLOAT: mc.TYPE_FP32, TensorProto.FLOAT16: mc.TYPE_FP16}


def make_onnx(path: Path, elem: int = TensorProto.FLOAT, batch: str | int = "N",
              external: bool = False) -> Path:
    """image (N, 3, H, W) -> translation = tanh(image * w), mask (N, 1, ?, ?) = mean over C."""
    image = helper.make_tensor_value_info("image", elem, [batch, 3, "H", "W"])
    translation = helper.make_tensor_value_info("translation", elem, [batch, 3, "H", "W"])
    mask = helper.make_tensor_value_info("mask", elem, [batch, 1, None, None])  # unknown H, W
    # raw bytes: only raw_data tensors can be moved to an external file
    half = np.array([0.5], helper.tensor_dtype_to_np_dtype(elem))
    weight = helper.make_tensor("w", elem, [1], half.tobytes(), raw=True)
    nodes = [helper.make_node("Mul", ["image", "w"], ["scaled"]),
             helper.make_node("Tanh", ["scaled"], ["translation"]),
             helper.make_node("ReduceMean", ["image"], ["mask"], axes=[1], keepdims=1)]
    graph = helper.make_graph(nodes, "tiny", [image], [translation, mask], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=external,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return path


def make_lomit_onnx(path: Path, masked: bool) -> Path:
    """LOMIT's signature: image, exemplar (N, 3, H, W) [, mask (N, 1, H, W)] -> translation
    (N, 3, H, W) [, mask], exemplar_mask (N, 1, H, W); the masked graph returns no mask."""
    def value(name: str, channels: int):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, "H", "W"])

    inputs = [value("image", 3), value("exemplar", 3)] + ([value("mask", 1)] if masked else [])
    mask = "mask" if masked else "image_mask"
    nodes = [helper.make_node("ReduceMean", ["exemplar"], ["exemplar_mask"], axes=[1]),
             helper.make_node("Add", ["image", "exemplar"], ["sum"]),
             helper.make_node("Mul", ["sum", mask], ["translation"])]
    outputs = [value("translation", 3), value("exemplar_mask", 1)]
    if not masked:
        nodes.insert(0, helper.make_node("ReduceMean", ["image"], ["image_mask"], axes=[1]))
        nodes.append(helper.make_node("Identity", ["image_mask"], ["mask"]))
        outputs.insert(1, value("mask", 1))
    graph = helper.make_graph(nodes, "lomit", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def parse_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def onnx_signature(path: Path) -> list[tuple[str, int, list[int]]]:
    """(name, Triton data type, dims without batch) of every graph input then output."""
    graph = onnx.load(str(path)).graph
    result = []
    for value in list(graph.input) + list(graph.output):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        result.append((value.name, TRITON_TYPES[tensor.elem_type], dims[1:]))
    return result


def config_signature(config: mc.ModelConfig) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in list(config.input) + list(config.output)]


def test_io_from_onnx_reads_names_types_and_dynamic_dims(tmp_path):
    inputs, outputs = io_from_onnx(make_onnx(tmp_path / "m.onnx"))
    assert inputs == [IOTensor("image", (3, -1, -1), "float32")]
    assert outputs == [IOTensor("translation", (3, -1, -1), "float32"),
                       IOTensor("mask", (1, -1, -1), "float32")]


def test_repository_config_matches_schema_and_graph(tmp_path):
    onnx_path = make_onnx(tmp_path / "model.onnx")
    inputs, outputs = io_from_onnx(onnx_path)
    folders = write_repository(tmp_path / "triton", "additive", inputs, outputs, onnx_path,
                               None, max_batch_size=16, preferred_batch_sizes=[4, 8],
                               max_queue_delay_us=2000, max_queue_size=64,
                               queue_timeout_us=1_000_000, instance_kind="KIND_CPU",
                               instance_count=2)
    assert folders == [tmp_path / "triton" / "additive"]
    assert not (tmp_path / "triton" / "additive_trt").exists()
    model_file = folders[0] / "1" / "model.onnx"
    assert model_file.read_bytes() == onnx_path.read_bytes()

    config = parse_config(folders[0] / "config.pbtxt")
    assert config.name == "additive"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert config_signature(config) == onnx_signature(model_file)
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    assert batching.max_queue_delay_microseconds == 2000
    policy = batching.default_queue_policy
    assert policy.max_queue_size == 64
    assert policy.default_timeout_microseconds == 1_000_000
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.allow_timeout_override
    assert len(config.instance_group) == 1
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("masked", [False, True])
def test_two_and_three_input_configs_match_schema_and_graph(tmp_path, masked):
    onnx_path = make_lomit_onnx(tmp_path / "model.onnx", masked)
    name = "lomit_masked" if masked else "lomit"
    [folder] = write_repository(tmp_path / "triton", name, *io_from_onnx(onnx_path), onnx_path,
                                None, max_batch_size=8)
    config = parse_config(folder / "config.pbtxt")
    assert config.name == name
    assert config_signature(config) == onnx_signature(folder / "1" / "model.onnx")
    want_in = [("image", [3, -1, -1]), ("exemplar", [3, -1, -1])]
    want_out = [("translation", [3, -1, -1]), ("exemplar_mask", [1, -1, -1])]
    if masked:
        want_in.append(("mask", [1, -1, -1]))
    else:
        want_out.insert(1, ("mask", [1, -1, -1]))
    assert [(t.name, list(t.dims)) for t in config.input] == want_in
    assert [(t.name, list(t.dims)) for t in config.output] == want_out


def test_defaults_parse(tmp_path):
    text = config_text("m", "onnxruntime_onnx", [IOTensor("image", (3, 256, 256), "float32")],
                       [IOTensor("translation", (3, 256, 256), "float32")], max_batch_size=8)
    config = text_format.Parse(text, mc.ModelConfig())
    assert list(config.input[0].dims) == [3, 256, 256]
    assert not config.dynamic_batching.preferred_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert config.dynamic_batching.default_queue_policy.default_timeout_microseconds == 30_000_000
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    assert config.instance_group[0].count == 1


def test_fp16_io(tmp_path):
    onnx_path = make_onnx(tmp_path / "model.fp16.onnx", elem=TensorProto.FLOAT16)
    inputs, outputs = io_from_onnx(onnx_path)
    assert {t.dtype for t in inputs + outputs} == {"float16"}
    [folder] = write_repository(tmp_path / "triton", "half", inputs, outputs, onnx_path, None, 4)
    config = parse_config(folder / "config.pbtxt")
    assert {t.data_type for t in list(config.input) + list(config.output)} == {mc.TYPE_FP16}
    assert config_signature(config) == onnx_signature(onnx_path)


def test_trt_model_written_when_plan_given(tmp_path):
    onnx_path = make_onnx(tmp_path / "model.onnx")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real engine")      # the repository only copies it
    inputs, outputs = io_from_onnx(onnx_path)
    half = ([IOTensor(t.name, t.dims, "float16") for t in inputs],
            [IOTensor(t.name, t.dims, "float16") for t in outputs])
    folders = write_repository(tmp_path / "triton", "additive", inputs, outputs, onnx_path,
                               plan, max_batch_size=8, plan_io=half)
    assert folders == [tmp_path / "triton" / "additive", tmp_path / "triton" / "additive_trt"]
    assert (folders[1] / "1" / "model.plan").read_bytes() == b"not a real engine"
    onnx_config = parse_config(folders[0] / "config.pbtxt")
    trt_config = parse_config(folders[1] / "config.pbtxt")
    assert onnx_config.platform == "onnxruntime_onnx"
    assert trt_config.platform == "tensorrt_plan"
    assert trt_config.name == "additive_trt"
    assert trt_config.max_batch_size == 8
    assert {t.data_type for t in trt_config.input} == {mc.TYPE_FP16}
    assert {t.data_type for t in onnx_config.input} == {mc.TYPE_FP32}


def test_external_weights_are_copied(tmp_path):
    onnx_path = make_onnx(tmp_path / "model.onnx", external=True)
    assert (tmp_path / "weights.bin").is_file()
    [folder] = write_repository(tmp_path / "triton", "ext", *io_from_onnx(onnx_path),
                                onnx_path, None, 2)
    assert (folder / "1" / "weights.bin").read_bytes() == (tmp_path / "weights.bin").read_bytes()
    onnx.checker.check_model(str(folder / "1" / "model.onnx"))   # loads the copied weights


def test_fixed_batch_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="fixed first dimension.*dynamic batch"):
        io_from_onnx(make_onnx(tmp_path / "m.onnx", batch=1))


def test_unsupported_element_type_is_named(tmp_path):
    value = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "g", [value],
                              [out])
    path = tmp_path / "ids.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="'ids' has element type INT64"):
        io_from_onnx(path)


@pytest.mark.parametrize("name", ["", "my model", "a/b", "zebra\n"])
def test_bad_model_name(tmp_path, name):
    onnx_path = make_onnx(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="letters, digits"):
        write_repository(tmp_path / "triton", name, *io_from_onnx(onnx_path), onnx_path, None, 4)
    assert not (tmp_path / "triton").exists()


def test_missing_onnx_file(tmp_path):
    io = [IOTensor("image", (3, -1, -1), "float32")], [IOTensor("translation", (3, -1, -1),
                                                                "float32")]
    with pytest.raises(FileNotFoundError, match="export it first"):
        write_repository(tmp_path / "triton", "m", *io, tmp_path / "nope.onnx", None, 4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io_from_onnx(tmp_path / "nope.onnx")


def test_missing_plan_file(tmp_path):
    onnx_path = make_onnx(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="plan_path=None"):
        write_repository(tmp_path / "triton", "m", *io_from_onnx(onnx_path), onnx_path,
                         tmp_path / "model.plan", 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"preferred_batch_sizes": [4, 32]}, r"preferred batch sizes \[32\]"),
    ({"instance_kind": "GPU"}, "unknown instance kind 'GPU'"),
    ({"dtype": "int8"}, "dtype 'int8'; known: float32, float16"),
    ({"dims": (3, 0, -1)}, "positive size or -1"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    dtype, dims = kwargs.pop("dtype", "float32"), kwargs.pop("dims", (3, -1, -1))
    args = {"max_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        config_text("m", "onnxruntime_onnx", [IOTensor("image", dims, dtype)],
                    [IOTensor("translation", (3, -1, -1), "float32")], **args)


def test_unknown_platform_and_repeated_names():
    image = IOTensor("image", (3, -1, -1), "float32")
    with pytest.raises(ValueError, match="unknown Triton platform 'onnx'"):
        config_text("m", "onnx", [image], [image], 4)
    with pytest.raises(ValueError, match=r"\['image'\] are used more than once"):
        config_text("m", "onnxruntime_onnx", [image], [image], 4)


def test_odd_tensor_names_are_escaped():
    odd = IOTensor('a"b\\c', (1,), "float32")
    text = config_text("m", "onnxruntime_onnx", [odd], [IOTensor("out", (1,), "float32")], 1)
    assert text_format.Parse(text, mc.ModelConfig()).input[0].name == 'a"b\\c'


def test_pictures_model_config_parses_with_optional_inputs(tmp_path):
    from i2i.export.triton_repo import write_pictures_model
    folder = write_pictures_model(tmp_path, "lomit", ["image", "exemplar"], ["mask"], 8)
    config = parse_config(folder / "config.pbtxt")
    assert folder.name == "lomit_pictures" and config.backend == "python"
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims), t.optional) for t in config.input] == [
        ("image", mc.TYPE_STRING, [1], False), ("exemplar", mc.TYPE_STRING, [1], False),
        ("mask", mc.TYPE_STRING, [1], True)]
    assert [(t.name, t.data_type) for t in config.output] == [("picture", mc.TYPE_STRING)]
    assert config.parameters["export"].string_value == "../.."
    assert config.parameters["engine"].string_value == "onnxruntime"
    assert "from i2i.runtime.triton_python import TritonPythonModel" in (
        folder / "1" / "model.py").read_text()


@pytest.mark.parametrize("required,optional,message", [
    ([], ["mask"], "at least one required picture input"),
    (["image"], ["picture"], "may not be named 'picture'"),
    (["image"], ["image"], r"\['image'\] are listed more than once"),
])
def test_pictures_model_config_refuses_bad_inputs(required, optional, message):
    from i2i.export.triton_repo import pictures_config_text
    with pytest.raises(ValueError, match=message):
        pictures_config_text("m_pictures", required, optional, 4)


class FakeTensor:
    def __init__(self, rows: list[bytes]):
        self.rows = rows

    def as_numpy(self) -> np.ndarray:
        return np.array([[r] for r in self.rows], dtype=np.object_)       # (N, 1) BYTES


class DictRequest(dict):
    """A request: its tensors, and its parameters as the backend gives them (JSON text)."""

    def __init__(self, request: dict, params: dict):
        super().__init__(request)
        self.params = params

    def parameters(self) -> str:
        return json.dumps(self.params)


class FakeBackend:
    """What TritonPythonModel.rows reads of triton_python_backend_utils and a request."""

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request["tensors"].get(name)


def test_pictures_model_reads_rows_and_parameters_as_a_query():
    from i2i.runtime.triton_python import TritonPythonModel
    model = TritonPythonModel()
    model.inputs = ["image", "exemplar", "mask"]
    request = {"tensors": {"image": FakeTensor([b"a", b"b"]),
                           "exemplar": FakeTensor([b"c", b"d"])}}
    rows = model.rows(FakeBackend, DictRequest(request, {"strength": 0.5, "working": 32,
                                                          "flag": True}))
    assert rows == [({"image": b"a", "exemplar": b"c"}, {"strength": "0.5", "working": "32",
                                                          "flag": "true"}),
                    ({"image": b"b", "exemplar": b"d"}, {"strength": "0.5", "working": "32",
                                                          "flag": "true"})]


def test_pictures_model_refuses_inputs_of_different_row_counts():
    from i2i.runtime.triton_python import TritonPythonModel
    model = TritonPythonModel()
    model.inputs = ["image", "exemplar"]
    request = {"tensors": {"image": FakeTensor([b"a", b"b"]), "exemplar": FakeTensor([b"c"])}}
    refused = model.rows(FakeBackend, DictRequest(request, {}))
    assert "every picture input needs the same number of rows; got {'image': 2, " \
           "'exemplar': 1}" in str(refused)
