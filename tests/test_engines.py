"""Engines: every available backend against eager fp32 on the same inputs, specs, and the errors.

A tiny additive checkpoint is exported once per module (ONNX fp32/fp16 and AOTInductor at 16x16,
batch 1..4); the AOTI compile is most of this file's time.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from i2i.engines import ENGINES, check_batch, engine_availability, open_engine
from i2i.engines.openvino import availability as openvino_availability
from i2i.export import ExportOptions, build
from i2i.export.parity import FP16_MIN_PSNR, FP32_MAX_ABS
from i2i.models import build as build_model
from i2i.models import make_config, save_checkpoint

SIZE = (16, 16)
# (engine, precision) pairs the parity test runs; it must name every engine in ENGINES.
PARITY_CASES = [("eager", "fp16"), ("eager", "bf16"), ("fused", "auto"), ("onnxruntime", "fp32"),
                ("onnxruntime", "fp16"), ("tensorrt", "auto"), ("aoti", "auto"),
                ("openvino", "fp32")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export dir) of a seeded tiny additive model."""
    root = tmp_path_factory.mktemp("engines")
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1})
    module = build_model("additive", config)
    ckpt = save_checkpoint(root / "step_000001.safetensors", "additive", config,
                           module.state_dict(), step=1, meta={"training": {"size": 16}})
    vino = ("openvino",) if openvino_availability() is None else ()   # else its case skips
    out = build(ckpt, ExportOptions(out=root / "export", formats=("onnx", "aoti", *vino),
                                    fp16=True,
                                    batch=(1, 2, 4), size=SIZE, log=lambda *_: None))
    return ckpt, out


def images(n: int = 3, size: tuple[int, int] = SIZE, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand((n, channels, *size), generator=g) * 2 - 1      # (N, C, H, W) in [-1, 1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)       # peak-to-peak 2


def test_parity_cases_cover_every_engine():
    assert {name for name, _ in PARITY_CASES} == set(ENGINES)


@pytest.mark.parametrize(("name", "precision"), PARITY_CASES)
def test_engine_matches_eager_fp32(exported, name, precision):
    ckpt, out = exported
    reason = engine_availability(name, out, ckpt, precision=precision)
    if reason is not None:
        pytest.skip(f"{name} cannot open here: {reason}")
    engine = open_engine(name, export_dir=out, checkpoint=ckpt, precision=precision)
    reference = open_engine("eager", checkpoint=ckpt, device="cpu", precision="fp32")
    x = images(3)
    want, got = reference.run({"image": x}), engine.run({"image": x})
    assert sorted(got) == ["mask", "translation"]
    for key, value in want.items():
        assert got[key].dtype == torch.float32 and got[key].device.type == "cpu"
        assert got[key].shape == value.shape == (3, 3, *SIZE)
        if engine.spec.precision == "fp32":
            err = (got[key] - value).abs().max().item()
            assert err <= FP32_MAX_ABS, f"{name} {key}: max abs error {err:.3g}"
        else:
            assert psnr(got[key], value) >= FP16_MIN_PSNR, f"{name} {key}"


def test_specs_come_from_the_checkpoint_and_the_manifest(exported):
    ckpt, out = exported
    eager = open_engine("eager", checkpoint=ckpt, max_batch_size=8)
    assert eager.name == "eager" and eager.spec.model == "additive"
    assert [t.name for t in eager.spec.inputs] == ["image"]
    assert [t.name for t in eager.spec.outputs] == ["translation", "mask"]
    assert eager.spec.inputs[0].shape == (-1, 3, -1, -1)
    assert eager.spec.max_batch_size == 8 and eager.spec.size is None
    assert eager.spec.size_multiple == 4 and eager.spec.default_size == SIZE
    assert (eager.spec.precision, eager.spec.device) == ("fp32", "cpu")
    onnx = open_engine("onnxruntime", export_dir=out)
    assert onnx.spec.max_batch_size == 4 and onnx.spec.size is None
    assert onnx.spec.default_size == SIZE and onnx.spec.outputs == eager.spec.outputs
    assert open_engine("onnxruntime", export_dir=out, max_batch_size=2).spec.max_batch_size == 2
    aoti = open_engine("aoti", export_dir=out)
    assert aoti.spec.size == SIZE and aoti.spec.max_batch_size == 4
    assert (aoti.spec.precision, aoti.spec.device) == ("fp32", "cpu")


def test_dynamic_onnx_takes_other_sizes_and_the_whole_batch_range(exported):
    ckpt, out = exported
    engine = open_engine("onnxruntime", export_dir=out)
    reference = open_engine("eager", checkpoint=ckpt)
    for n, size in ((1, (8, 12)), (4, (20, 16))):
        x = images(n, size)
        got, want = engine.run({"image": x}), reference.run({"image": x})
        assert (got["translation"] - want["translation"]).abs().max() <= FP32_MAX_ABS


@pytest.mark.parametrize(("batch", "message"), [
    ({"img": images(1)}, r"inputs \['img'\] do not match the engine's inputs \['image'\]"),
    ({"image": images(1, channels=4)}, "has 4 channels; the model takes 3"),
    ({"image": images(1, (18, 16))}, "multiples of 4 .*20x16"),
    ({"image": images(5)}, "batch of 5 rows; this engine takes 1 to 4"),
    ({"image": images(1)[0]}, r"must be an \(N, C, H, W\) tensor"),
    ({"image": (images(1) * 127).to(torch.uint8)}, "float32 in \\[-1, 1\\]"),
])
def test_bad_batches_are_refused_before_running(exported, batch, message):
    _, out = exported
    engine = open_engine("onnxruntime", export_dir=out)
    with pytest.raises(ValueError, match=message):
        engine.run(batch)
    with pytest.raises(ValueError, match=message):     # the same rule for every engine
        check_batch(open_engine("eager", checkpoint=exported[0], max_batch_size=4).spec, batch)


def test_fixed_size_engine_refuses_other_sizes(exported):
    aoti = open_engine("aoti", export_dir=exported[1])
    with pytest.raises(ValueError, match="takes only 16x16 images .*re-export with --size"):
        aoti.run({"image": images(1, (20, 20))})


def test_missing_model_onnx_names_the_file_and_i2i_export(exported, tmp_path):
    shutil.copy(exported[1] / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(FileNotFoundError, match=r"model\.onnx not found.*i2i-export"):
        open_engine("onnxruntime", export_dir=tmp_path)
    reason = engine_availability("onnxruntime", tmp_path, None)
    assert "model.onnx" in reason and "i2i-export" in reason
    with pytest.raises(FileNotFoundError, match="run i2i-export first"):
        open_engine("aoti", export_dir=tmp_path / "nowhere")


def test_unknown_engine_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown engine 'onnx'; known: eager, fused, "
                                         "onnxruntime, tensorrt, aoti"):
        open_engine("onnx")
    with pytest.raises(ValueError, match="unknown engine"):
        engine_availability("onnx", None, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reason given without a GPU")
def test_tensorrt_says_why_it_cannot_run_here(exported):
    reason = engine_availability("tensorrt", exported[1], None)
    assert reason is not None and ("TensorRT" in reason or "tensorrt" in reason
                                   or "GPU" in reason)
    with pytest.raises(RuntimeError, match="engine 'tensorrt' cannot run here"):
        open_engine("tensorrt", export_dir=exported[1])


def test_eager_from_an_export_dir_needs_its_checkpoint(exported, tmp_path):
    ckpt, out = exported
    with pytest.raises(ValueError, match="records only the name of its checkpoint "
                                         r"\(step_000001.safetensors\).*--checkpoint"):
        open_engine("eager", export_dir=out)
    # A copy of the exported checkpoint inside the export dir is found (and checked by sha256).
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    shutil.copy(ckpt, copy / ckpt.name)
    assert engine_availability("eager", copy, None) is None
    # Another checkpoint than the exported one is refused.
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1})
    save_checkpoint(other, "additive", config, build_model("additive", config).state_dict())
    with pytest.raises(ValueError, match="is not the one .* was exported from"):
        open_engine("eager", export_dir=out, checkpoint=other)


def test_precision_and_device_errors(exported):
    ckpt, out = exported
    with pytest.raises(ValueError, match="unknown precision 'int4'; known: auto, fp32, fp16, "
                                         "bf16, int8"):
        open_engine("eager", checkpoint=ckpt, precision="int4")
    with pytest.raises(ValueError, match="engine 'eager' runs fp32, fp16, bf16, not int8; .*"
                                         r"an engine that runs int8 \(onnxruntime, tensorrt, "
                                         r"openvino\)"):
        open_engine("eager", checkpoint=ckpt, precision="int8")
    with pytest.raises(ValueError, match="engine 'aoti' runs fp32 only"):
        open_engine("aoti", export_dir=out, precision="fp16")
    with pytest.raises(ValueError, match="compile=True applies to the eager and fused"):
        open_engine("onnxruntime", export_dir=out, compile=True)
    with pytest.raises(ValueError, match="pass checkpoint"):
        open_engine("fused")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signatures"]["default"]["artifacts"]["aoti"]["device"] == "cpu"
