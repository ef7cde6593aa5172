"""UNIT end to end: a few training steps, both directions exported (ONNX fp32 and fp16, gated),
then translated by i2i-translate and served by i2i-serve."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.export import read_manifest
from i2i.export.cli import main as export
from i2i.models import load
from i2i.runtime.translate_cli import main as translate
from i2i.train.loop import TrainOptions, train

from .server_utils import decoded, png_bytes, running
from .server_utils import translate as post_translate

RUN = dict(model="unit", size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=2, steps=2,
           batch_size=2, progress=False, sample_every=2, checkpoint_every=2, log_every=1)
FOLDERS = {"AtoB": "unit", "BtoA": "unit_BtoA"}
CHECKPOINTS = {"AtoB": "step_000002.safetensors", "BtoA": "step_000002.BtoA.safetensors"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """runs/unit (two steps on circle2square) and exports/unit, exports/unit_BtoA beside it,
    made by the command line as a user would."""
    root = tmp_path_factory.mktemp("unit")
    train(TrainOptions(out=str(root / "runs" / "unit"), **RUN))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for direction in FOLDERS:
            assert export(["--model", "unit", "--direction", direction, "--fp16",
                           "--formats", "onnx", "--batch", "1:2:4"]) == 0
    finally:
        os.chdir(cwd)
    return root


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def module_pixels(root: Path, direction: str, rgb: np.ndarray) -> np.ndarray:
    """The checkpoint's own translation of a picture, as 8-bit pixels (H, W, 3)."""
    module, _ = load(root / "runs" / "unit" / "checkpoints" / CHECKPOINTS[direction])
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = module(x)["translation"][0].permute(1, 2, 0).numpy()
    return np.round((y + 1) * 127.5).astype(np.int64)


@pytest.mark.parametrize("direction", sorted(FOLDERS))
def test_both_directions_export_and_pass_the_gate(root, direction):
    manifest = read_manifest(root / "exports" / FOLDERS[direction])
    assert manifest["model"] == "unit"
    assert manifest["checkpoint"]["file"] == CHECKPOINTS[direction]
    assert manifest["checkpoint"]["direction"] == direction
    artifacts = manifest["signatures"]["default"]["artifacts"]
    assert artifacts["onnx"]["passed"] and artifacts["onnx_fp16"]["passed"]


def test_i2i_translate_runs_each_direction_as_its_checkpoint_does(root, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgb = picture(0)
    Image.fromarray(rgb).save(inputs / "a.png")
    made = {}
    for direction, folder in FOLDERS.items():
        out = tmp_path / direction
        assert translate([str(inputs), str(out), "--model", str(root / "exports" / folder),
                          "--no-progress"]) == 0
        assert "translated 1" in capsys.readouterr().out
        made[direction] = np.asarray(Image.open(out / "a.png")).astype(np.int64)
        assert np.abs(made[direction] - module_pixels(root, direction, rgb)).max() <= 1
    assert np.abs(made["AtoB"] - made["BtoA"]).max() > 2       # two different generators


def test_i2i_serve_answers_with_the_b_to_a_generator(root):
    rgb = picture(1)
    with running(["--export", str(root / "exports" / "unit_BtoA")]) as server:
        status, body = post_translate(server.url, {"image": png_bytes(rgb)})
    assert status == 200, body
    assert np.abs(decoded(body) - module_pixels(root, "BtoA", rgb)).max() <= 1
