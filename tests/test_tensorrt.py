"""TensorRT export: availability reasons, profile checks, plan compatibility; a GPU build test.

Only test_build_engine_on_gpu runs TensorRT itself; it needs tensorrt and a CUDA GPU.
"""

from __future__ import annotations

import types
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from i2i.engines import tensorrt as trt_runtime
from i2i.engines.tensorrt import availability, check_plan_compatible
from i2i.export import tensorrt as trt_export
from i2i.export.tensorrt import build_engine, check_profile, onnx_precision

BUILT = {"tensorrt": "10.13.0.35", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
         "profile": {}, "strongly_typed": True}


def tiny_onnx(path: Path, elem: int = TensorProto.FLOAT16) -> Path:
    """image (N, 3, H, W) -> translation = tanh(image * w), in `elem` throughout."""
    image = helper.make_tensor_value_info("image", elem, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info("translation", elem, ["N", 3, "H", "W"])
    weight = helper.make_tensor("w", elem, [1], [0.5])
    nodes = [helper.make_node("Mul", ["image", "w"], ["scaled"]),
             helper.make_node("Tanh", ["scaled"], ["translation"])]
    graph = helper.make_graph(nodes, "tiny", [image], [out], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def fake_machine(monkeypatch, **facts):
    here = {"tensorrt": BUILT["tensorrt"], "gpu": BUILT["gpu"],
            "compute_capability": BUILT["compute_capability"], **facts}
    monkeypatch.setattr(trt_runtime, "current_machine", lambda: here)


@pytest.mark.skipif(availability() is None, reason="TensorRT can build on this machine")
def test_availability_names_the_cause_here():
    reason = availability()
    assert "tensorrt is not installed (pip install i2i[gpu])" in reason or \
        "no CUDA GPU is available" in reason


def test_availability_without_tensorrt(monkeypatch):
    monkeypatch.setattr(trt_runtime.importlib.util, "find_spec", lambda name: None)
    assert availability() == "tensorrt is not installed (pip install i2i[gpu])"


def test_availability_without_gpu(monkeypatch):
    fake = types.SimpleNamespace(__version__="11.1.0.5")
    monkeypatch.setattr(trt_runtime.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(trt_runtime, "_import_tensorrt", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert availability() == "no CUDA GPU is available (TensorRT builds engines on a GPU)"


def test_availability_with_old_tensorrt(monkeypatch):
    fake = types.SimpleNamespace(__version__="8.6.1")
    monkeypatch.setattr(trt_runtime.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(trt_runtime, "_import_tensorrt", lambda: fake)
    assert "tensorrt 8.6.1 is too old" in availability()


@pytest.mark.skipif(availability() is None, reason="TensorRT can build on this machine")
def test_build_engine_raises_the_reason(tmp_path):
    with pytest.raises(RuntimeError) as err:
        build_engine(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "model.plan",
                     {"image": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))})
    assert availability() in str(err.value)
    assert not (tmp_path / "model.plan").exists()


def test_plan_compatible_on_the_same_machine(monkeypatch):
    fake_machine(monkeypatch)
    check_plan_compatible(BUILT)


def test_plan_from_another_tensorrt_version(monkeypatch):
    fake_machine(monkeypatch, tensorrt="11.1.0.5")
    with pytest.raises(RuntimeError, match=r"built with TensorRT 10\.13\.0\.35 on NVIDIA H100 "
                                           r"80GB HBM3 \(sm_90\).*TensorRT 11\.1\.0\.5.*"
                                           r"re-export with i2i-export"):
        check_plan_compatible(BUILT)


def test_plan_from_another_gpu(monkeypatch):
    fake_machine(monkeypatch, gpu="NVIDIA A100-SXM4-40GB", compute_capability="8.0")
    with pytest.raises(RuntimeError, match=r"this machine has TensorRT .* on NVIDIA A100-SXM4-40GB "
                                           r"\(sm_80\).*re-export"):
        check_plan_compatible(BUILT)


def test_same_compute_capability_other_gpu_name_is_fine(monkeypatch):
    fake_machine(monkeypatch, gpu="NVIDIA H100 PCIe")
    check_plan_compatible(BUILT)


def test_plan_on_a_machine_without_tensorrt(monkeypatch):
    fake_machine(monkeypatch, tensorrt=None)
    with pytest.raises(RuntimeError, match="no TensorRT. Serve the ONNX model instead"):
        check_plan_compatible(BUILT)


def test_manifest_entry_without_facts():
    with pytest.raises(RuntimeError, match=r"lacks \['compute_capability'\].*re-export"):
        check_plan_compatible({"tensorrt": "10.13.0.35"})


def test_check_profile_accepts_a_valid_range():
    check_profile({"image": ((1, 3, 64, 64), (8, 3, 256, 256), (16, 3, 512, 512))},
                  {"image": (-1, 3, -1, -1)})


@pytest.mark.parametrize("shapes, message", [
    ({}, r"missing \['image'\]"),
    ({"image": ((1, 3, 8, 8),) * 3, "mask": ((1, 1, 8, 8),) * 3}, r"unknown \['mask'\]"),
    ({"image": ((1, 3, 8), (1, 3, 8), (1, 3, 8))}, "needs 4 dimensions"),
    ({"image": ((4, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))}, "min <= opt <= max"),
    ({"image": ((0, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))}, "1 <= min"),
    ({"image": ((1, 1, 8, 8), (2, 1, 8, 8), (8, 1, 8, 8))}, "fixed at 3"),
])
def test_check_profile_errors(shapes, message):
    with pytest.raises(ValueError, match=message):
        check_profile(shapes, {"image": (-1, 3, -1, -1)})


def test_parser_errors_name_the_node():
    error = types.SimpleNamespace(node=lambda: 3, node_name=lambda: "/conv/Conv",
                                  node_operator=lambda: "Conv", code=lambda: "UNSUPPORTED_NODE",
                                  desc=lambda: "no kernel")
    assert trt_export._describe_parser_error(error) == \
        "node 3 '/conv/Conv' (Conv): UNSUPPORTED_NODE: no kernel"


class FakeConfig:
    """Stands in for IBuilderConfig: a cache blob fits only if it says so."""

    def __init__(self):
        self.attached = []

    def create_timing_cache(self, blob):
        return blob

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        self.attached.append(cache)
        return cache in (b"", b"fits")


@pytest.mark.parametrize("stored, attached", [
    (None, [b""]), (b"fits", [b"fits"]), (b"other gpu", [b"other gpu", b""])])
def test_timing_cache_is_reused_only_when_it_fits(tmp_path, stored, attached):
    path = tmp_path / "timing.cache"
    if stored is not None:
        path.write_bytes(stored)
    config = FakeConfig()
    trt_export._attach_timing_cache(config, path)
    assert config.attached == attached


def test_onnx_precision(tmp_path):
    assert onnx_precision(tiny_onnx(tmp_path / "h.onnx")) == "float16"
    assert onnx_precision(tiny_onnx(tmp_path / "f.onnx", TensorProto.FLOAT)) == "float32"


@pytest.mark.gpu
@pytest.mark.skipif(availability() is not None, reason=f"TensorRT cannot build here: "
                                                      f"{availability()}")
def test_build_engine_on_gpu(tmp_path):
    import tensorrt as trt

    onnx_path = tiny_onnx(tmp_path / "model.fp16.onnx")
    plan = tmp_path / "out" / "model.plan"
    shapes = {"image": ((1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))}
    facts = build_engine(onnx_path, plan, shapes, workspace_bytes=1 << 28)
    assert plan.stat().st_size > 0
    cache = tmp_path / "out" / "timing.cache"
    assert cache.stat().st_size > 0
    assert facts["tensorrt"] == trt.__version__
    assert facts["gpu"] == torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    assert facts["compute_capability"] == f"{major}.{minor}"
    assert facts["profile"] == {"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 16, 16],
                                          "max": [4, 3, 32, 32]}}
    assert facts["strongly_typed"] is True
    check_plan_compatible(facts)

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        plan.read_bytes())
    assert engine is not None
    assert engine.get_tensor_dtype("image") == trt.DataType.HALF
    assert engine.get_tensor_dtype("translation") == trt.DataType.HALF

    # A second build reads the timing cache written by the first.
    again = build_engine(onnx_path, tmp_path / "out" / "again.plan", shapes,
                         workspace_bytes=1 << 28)
    assert again["profile"] == facts["profile"]

    with pytest.raises(ValueError, match="fp32 engine"):
        build_engine(tiny_onnx(tmp_path / "f.onnx", TensorProto.FLOAT), plan, shapes)

