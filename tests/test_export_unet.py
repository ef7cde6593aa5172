"""i2i-export of pix2pix U-Nets at their own size (depth d at 2^d: unet_128, unet_256), where
the bottleneck is 1x1, and above it, with dynamic height and width either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from i2i.export import ExportOptions, build, read_manifest
from i2i.export.cli import main
from i2i.models import build as build_model
from i2i.models import load, make_config, save_checkpoint


def unet(tmp_path: Path, depth: int, size: int) -> Path:
    """A tiny (ngf 2) pix2pix checkpoint of `depth` trained at `size`, under tmp_path/runs."""
    torch.manual_seed(0)
    config = make_config("pix2pix", {"depth": depth, "ngf": 2})
    module = build_model("pix2pix", config)
    path = tmp_path / "runs" / "unet" / "checkpoints" / "step_000001.safetensors"
    return save_checkpoint(path, "pix2pix", config, module.state_dict(), step=1,
                           meta={"training": {"size": size}})


def onnx_only(tmp_path: Path, **kw) -> ExportOptions:
    return ExportOptions(**{"out": tmp_path / "export", "formats": ("onnx",), "batch": (1, 2, 2),
                            "log": lambda *_: None, **kw})


def test_cli_exports_unet_128_at_its_own_size(tmp_path, capsys):
    unet(tmp_path, depth=7, size=128)
    code = main(["--model", "pix2pix", "--runs", str(tmp_path / "runs"), "--formats", "onnx",
                 "--batch", "1:2:2", "--out", str(tmp_path / "export")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["size"] == [128, 128] and manifest["size_multiple"] == 128
    onnx = manifest["signatures"]["default"]["artifacts"]["onnx"]
    assert onnx["passed"] and onnx["dynamic"] == ["batch", "height", "width"]


def test_unet_256_at_its_own_size_passes_the_gate_and_stays_dynamic(tmp_path):
    ckpt = unet(tmp_path, depth=8, size=256)
    out = build(ckpt, onnx_only(tmp_path))
    manifest = read_manifest(out)
    assert manifest["size"] == [256, 256]
    assert manifest["signatures"]["default"]["artifacts"]["onnx"]["passed"]
    # The graph is not pinned to one block: it also takes 1 x 2 blocks.
    module, _ = load(ckpt)
    x = torch.rand(1, 3, 256, 512) * 2 - 1
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = module(x)["translation"].numpy()
    assert np.abs(y - want).max() < 1e-4


def test_unet_128_above_its_own_size_stays_dynamic(tmp_path):
    ckpt = unet(tmp_path, depth=7, size=128)
    out = build(ckpt, onnx_only(tmp_path, size=(256, 256)))
    onnx = read_manifest(out)["signatures"]["default"]["artifacts"]["onnx"]
    assert onnx["passed"] and onnx["dynamic"] == ["batch", "height", "width"]
    module, _ = load(ckpt)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 128, 128), (2, 3, 384, 256)):     # one block, and 3 x 2 blocks
        x = torch.rand(shape) * 2 - 1
        (y,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = module(x)["translation"].numpy()
        assert np.abs(y - want).max() < 1e-4
