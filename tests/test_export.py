"""i2i-export: ONNX fp32/fp16 with the parity gate, manifests, the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from i2i.export import ExportOptions, ParityError, build, find_checkpoint, parity, read_manifest
from i2i.export.cli import main
from i2i.models import MODELS, get_entry, make_config, save_checkpoint
from i2i.models import build as build_model

from .test_models import TINY as EVERY_TINY

# Smaller than tests/test_models.py's where the export tests here want it; the other models
# take theirs from there.
TINY = {**EVERY_TINY,
        "additive": {"ngf": 4, "n_blocks": 1}, "cyclegan": {"ngf": 4, "n_blocks": 1},
        "cut": {"ngf": 4, "n_blocks": 1},
        "pix2pix": {"depth": 3, "ngf": 4}}
# The models that translate an image alone, but additive, whose export the tests above follow
# in detail; models with more inputs (an exemplar, a mask) have export tests of their own.
IMAGE_ONLY = [name for name in MODELS if name != "additive" and [
    s.name for s in get_entry(name).spec(make_config(name, TINY[name])).inputs] == ["image"]]
SYNTHETIC = {"kind": "synthetic", "task": "circle2square", "size": 16, "seed": 0}


def checkpoint(tmp_path: Path, name: str = "additive", scale_stem: float = 1.0,
               run: str = "run", step: int = 5) -> Path:
    torch.manual_seed(0)
    config = make_config(name, TINY[name])
    module = build_model(name, config)
    if scale_stem != 1.0:          # activations entering the first instance norm x scale_stem
        with torch.no_grad():
            module.generator.stem.conv.weight.mul_(scale_stem)
    path = tmp_path / "runs" / run / "checkpoints" / f"step_{step:06d}.safetensors"
    return save_checkpoint(path, name, config, module.state_dict(), step=step,
                           meta={"data": SYNTHETIC, "training": {"size": 16}})


def options(tmp_path: Path, **kw) -> ExportOptions:
    base = dict(out=tmp_path / "export", formats=("onnx",), batch=(1, 2, 4), log=lambda *_: None)
    return ExportOptions(**{**base, **kw})


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_fp32_and_fp16_pass_the_gate_and_fill_the_manifest(tmp_path):
    out = build(checkpoint(tmp_path), options(tmp_path, fp16=True))
    manifest = read_manifest(out)
    assert manifest["model"] == "additive" and manifest["checkpoint"]["step"] == 5
    default = manifest["signatures"]["default"]
    assert [t["name"] for t in default["inputs"]] == ["image"]
    assert [t["name"] for t in default["outputs"]] == ["translation", "mask"]
    assert manifest["batch"] == {"min": 1, "opt": 2, "max": 4} and manifest["opset"] >= 18
    assert "onnxruntime" in manifest["versions"]
    fp32, fp16 = default["artifacts"]["onnx"], default["artifacts"]["onnx_fp16"]
    assert fp32["passed"] and fp16["passed"]
    assert max(v["max_abs"] for v in fp32["parity"].values()) <= 1e-4
    assert min(v["psnr"] for v in fp16["parity"].values()) >= 40
    # The fp16 graph keeps float32 I/O and the fp32 one has the spec's names.
    for file in ("model.onnx", "model.fp16.onnx"):
        graph = onnx.load(str(out / file)).graph
        assert [i.name for i in graph.input] == ["image"]
        assert [o.name for o in graph.output] == ["translation", "mask"]
        assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = {n.op_type for n in onnx.load(str(out / "model.fp16.onnx")).graph.node}
    assert "Cast" in ops and "InstanceNormalization" in ops


def test_fp16_graph_survives_activations_scaled_by_300(tmp_path):
    out = build(checkpoint(tmp_path, scale_stem=300.0), options(tmp_path, fp16=True))
    figures = read_manifest(out)["signatures"]["default"]["artifacts"]["onnx_fp16"]["parity"]
    assert all(np.isfinite(v["max_abs"]) for v in figures.values())
    assert min(v["psnr"] for v in figures.values()) >= 40


def test_fp16_io_keeps_half_inputs_and_outputs(tmp_path):
    out = build(checkpoint(tmp_path), options(tmp_path, fp16=True, fp16_io=True))
    graph = onnx.load(str(out / "model.fp16.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    fp16 = read_manifest(out)["signatures"]["default"]["artifacts"]["onnx_fp16"]
    assert fp16["io_dtype"] == "float16"


def test_onnx_has_dynamic_batch_and_size(tmp_path):
    ckpt = checkpoint(tmp_path)
    out = build(ckpt, options(tmp_path))
    module, _ = __import__("i2i.models", fromlist=["load"]).load(ckpt)
    sess = session(out / "model.onnx")
    for shape in ((1, 3, 16, 16), (3, 3, 24, 32)):
        x = torch.rand(shape) * 2 - 1
        translation, mask = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = module(x)
        assert np.abs(translation - want["translation"].numpy()).max() < 1e-4
        assert np.abs(mask - want["mask"].numpy()).max() < 1e-4


def test_the_image_only_models_are_at_least_those_tested_before():
    assert set(IMAGE_ONLY) >= {"cyclegan", "cut", "pix2pix"}


@pytest.mark.parametrize("name", IMAGE_ONLY)
def test_other_models_export(tmp_path, name):
    out = build(checkpoint(tmp_path, name), options(tmp_path))
    assert read_manifest(out)["signatures"]["default"]["artifacts"]["onnx"]["passed"]


def test_parity_miss_fails_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FP32_MAX_ABS", 0.0)      # nothing can pass now
    ckpt = checkpoint(tmp_path)
    with pytest.raises(ParityError, match=r"onnx (translation|mask): max abs error"):
        build(ckpt, options(tmp_path))
    manifest = read_manifest(tmp_path / "export")
    assert manifest["signatures"]["default"]["artifacts"]["onnx"]["passed"] is False
    assert manifest["parity_failures"]
    out = build(ckpt, options(tmp_path, allow_parity_failure=True))
    assert read_manifest(out)["parity_failures"]


def test_parity_figures_are_computed_independently():
    ref = lambda batch: {"y": batch["x"]}                                    # noqa: E731
    off = lambda batch: {"y": batch["x"] + 0.01}                             # noqa: E731
    figures = parity.compare(ref, off, [{"x": torch.zeros(2, 3, 4, 4)}])["y"]
    assert figures["max_abs"] == pytest.approx(0.01) and figures["mean_abs"] == pytest.approx(0.01)
    assert figures["psnr"] == pytest.approx(10 * np.log10(4 / 1e-4), abs=1e-3)   # 46 dB
    assert parity.verdict({"y": figures}, "fp16")[0]
    assert not parity.verdict({"y": figures}, "fp32")[0]


def test_find_checkpoint_takes_the_newest_of_the_model(tmp_path):
    old = checkpoint(tmp_path, run="a", step=1)
    new = checkpoint(tmp_path, run="b", step=2)
    import os
    os.utime(old, (1, 1))
    checkpoint(tmp_path, "cyclegan", run="c", step=3)
    assert find_checkpoint(tmp_path / "runs", "additive") == new
    with pytest.raises(ValueError, match="no pix2pix checkpoint under .*train one first"):
        find_checkpoint(tmp_path / "runs", "pix2pix")


def test_cli_exports_newest_checkpoint_with_all_default_formats(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    code = main(["--model", "additive", "--fp16", "--runs", str(tmp_path / "runs"),
                 "--formats", "onnx,aoti,triton", "--batch", "1:2:4",
                 "--out", str(tmp_path / "export")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"using the newest additive checkpoint: {ckpt}" in printed.out
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    artifacts = manifest["signatures"]["default"]["artifacts"]
    assert set(artifacts) == {"onnx", "onnx_fp16", "aoti", "triton"}
    assert artifacts["aoti"]["passed"]
    assert (tmp_path / "export" / "triton" / "additive" / "config.pbtxt").exists()
    assert (tmp_path / "export" / "triton" / "additive" / "1" / "model.onnx").exists()


@pytest.mark.parametrize("args,message", [
    (["--model", "adittive"], "unknown model 'adittive'"),
    (["--model", "additive"], "no additive checkpoint under"),
    (["--checkpoint", "missing.safetensors"], "does not exist"),
    (["--model", "additive", "--batch", "4:2:8"], "1 <= min <= opt <= max"),
    (["--model", "additive", "--batch", "8"], "MIN:OPT:MAX"),
    (["--model", "additive", "--formats", "onnx,coreml"], r"unknown format\(s\) \['coreml'\]"),
    (["--model", "additive", "--formats", "trt"], "TensorRT export asked for, but"),
])
def test_cli_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    if "adittive" not in args and "missing.safetensors" not in args and \
            "no additive" not in message:
        checkpoint(tmp_path)                          # a checkpoint under tmp_path/runs
    assert main(args) == 2
    err = capsys.readouterr().err
    import re
    assert re.search(message, err), err


def test_cli_rejects_truncated_foreign_and_mismatched_checkpoints(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:100])
    assert main(["--checkpoint", str(truncated)]) == 2
    assert "truncated" in capsys.readouterr().err
    foreign = tmp_path / "f.pth"
    torch.save({"w": torch.ones(2)}, foreign)
    assert main(["--checkpoint", str(foreign)]) == 2
    assert "not a readable i2i checkpoint" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpt), "--model", "cyclegan"]) == 2
    assert "is a 'additive' checkpoint, not 'cyclegan'" in capsys.readouterr().err


def test_size_the_architecture_cannot_take(tmp_path, capsys):
    ckpt = checkpoint(tmp_path, "pix2pix")
    assert main(["--checkpoint", str(ckpt), "--size", "100", "--formats", "onnx",
                 "--out", str(tmp_path / "e")]) == 2
    assert "multiples of 8" in capsys.readouterr().err
