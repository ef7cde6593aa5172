"""i2i-export --direction BtoA: a cycle run's B -> A generator exported, recorded in the manifest,
and served like any export; runs without one say why."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.engines import open_engine
from i2i.export import ExportOptions, build, read_manifest
from i2i.export.build import directed_checkpoint
from i2i.export.cli import main
from i2i.export.parity import FP32_MAX_ABS
from i2i.manifest import sha256
from i2i.models import build as build_model
from i2i.models import load, make_config, save_checkpoint
from i2i.models.checkpoint import CheckpointError
from i2i.runtime.translate_cli import main as translate
from i2i.train.loop import TrainOptions, train

TINY_RUN = dict(model="cyclegan", size=16, ngf=4, ndf=4, disc_layers=2, n_blocks=1, steps=2,
                batch_size=2, progress=False, sample_every=2, checkpoint_every=2, log_every=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A two-step cyclegan run under runs/cyc: checkpoints of both directions at step 2."""
    root = tmp_path_factory.mktemp("btoa")
    return train(TrainOptions(out=str(root / "runs" / "cyc"), **TINY_RUN)).parent.parent


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    """i2i-export --model cyclegan --direction BtoA --formats onnx, into its default folder."""
    cwd = Path.cwd()
    os.chdir(run.parent.parent)
    try:
        assert main(["--model", "cyclegan", "--runs", "runs", "--direction", "BtoA",
                     "--formats", "onnx", "--batch", "1:2:4"]) == 0
    finally:
        os.chdir(cwd)
    return run.parent.parent / "exports" / "cyclegan_BtoA"


def test_the_manifest_records_the_b_to_a_checkpoint(run, exported):
    manifest = read_manifest(exported)                 # manifest_sha256 checked here
    reverse = run / "checkpoints" / "step_000002.BtoA.safetensors"
    assert manifest["checkpoint"] == {"file": reverse.name, "sha256": sha256(reverse),
                                      "step": 2, "direction": "BtoA"}
    assert manifest["signatures"]["default"]["artifacts"]["onnx"]["passed"]
    assert not (run.parent.parent / "exports" / "cyclegan").exists()


def test_the_served_export_is_the_b_to_a_generator(run, exported):
    folder = run / "checkpoints"
    reverse, _ = load(folder / "step_000002.BtoA.safetensors")
    forward, _ = load(folder / "step_000002.safetensors")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    served = open_engine("onnxruntime", export_dir=exported, device="cpu").run({"image": x})
    with torch.no_grad():
        want, other = reverse(x)["translation"], forward(x)["translation"]
    torch.testing.assert_close(served["translation"], want, atol=FP32_MAX_ABS, rtol=0)
    assert (served["translation"] - other).abs().max() > 100 * FP32_MAX_ABS


def test_i2i_translate_runs_the_b_to_a_export(run, exported, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(inputs / "a.png")
    out = tmp_path / "out"
    assert translate([str(inputs), str(out), "--model", str(exported), "--no-progress"]) == 0
    assert "translated 1" in capsys.readouterr().out
    with Image.open(out / "a.png") as made:
        stamp = json.loads(made.text["i2i"])
    assert stamp["source"] == sha256(run / "checkpoints" / "step_000002.BtoA.safetensors")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<th>direction</th><td>BtoA</td>" in page
    assert f"<th>checkpoint or export</th><td>{exported}</td>" in page


def test_a_b_to_a_file_asked_for_a_to_b_is_an_error(run, capsys):
    reverse = run / "checkpoints" / "step_000002.BtoA.safetensors"
    assert main(["--checkpoint", str(reverse), "--direction", "AtoB", "--formats", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-export: error:")
    assert "is a B -> A generator" in err and "--direction BtoA" in err
    assert str(run / "checkpoints" / "step_000002.safetensors") in err
    assert directed_checkpoint(reverse, "BtoA") == reverse
    assert directed_checkpoint(reverse, None) == reverse


def test_the_a_to_b_direction_is_the_checkpoint_itself(run):
    forward = run / "checkpoints" / "step_000002.safetensors"
    assert directed_checkpoint(forward, "AtoB") == forward
    assert directed_checkpoint(forward, "BtoA") == forward.with_name(
        "step_000002.BtoA.safetensors")
    with pytest.raises(ValueError, match="unknown direction 'B'; known: AtoB, BtoA"):
        directed_checkpoint(forward, "B")


def _one(tmp_path: Path, model: str, values: dict, name: str = "step_000004.safetensors",
         **meta) -> Path:
    config = make_config(model, values)
    module = build_model(model, config)
    return save_checkpoint(tmp_path / "run" / "checkpoints" / name, model, config,
                           module.state_dict(), step=4,
                           meta={"direction": "AtoB", "supervised": False, **meta})


@pytest.mark.parametrize("model,values,supervised,says", [
    ("pix2pix", {"depth": 3, "ngf": 4}, False,
     "pix2pix trains one generator.*i2i-train --model pix2pix --direction BtoA"),
    ("additive", {"ngf": 4, "n_blocks": 1}, True, "supervised additive recipe fits one"),
    ("lomit", {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2}, False,
     "lomit trains one generator for both ways.*exemplar of the other domain"),
    ("cut", {"ngf": 4, "n_blocks": 1}, False,
     "cut trains one generator.*run of its own with the domains swapped"),
])
def test_one_way_runs_say_why_they_have_no_b_to_a_generator(tmp_path, capsys, model, values,
                                                             supervised, says):
    path = _one(tmp_path, model, values, supervised=supervised)
    with pytest.raises(CheckpointError, match=f"a {model} run has no B -> A generator"):
        build(path, ExportOptions(out=tmp_path / "x", formats=("onnx",), direction="BtoA"))
    assert main(["--checkpoint", str(path), "--direction", "BtoA", "--formats", "onnx",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-export: error:")
    assert re.search(says, err), err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("model,values", [("pix2pix", {"depth": 3, "ngf": 4}),
                                          ("cyclegan", {"ngf": 4, "n_blocks": 1})])
def test_the_reason_in_the_checkpoint_meta_is_the_one_given(tmp_path, model, values):
    # A checkpoint says itself why its run has no B -> A generator (meta["one_way"]); that
    # wins over the table kept for older checkpoints, and needs no entry in it.
    path = _one(tmp_path, model, values, one_way="its recipe trains one way, said here")
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: a {model} run has no "
                                              "B -> A generator to export: its recipe trains "
                                              "one way, said here$"):
        directed_checkpoint(path, "BtoA")


def test_a_cycle_run_without_its_b_to_a_file_says_how_to_write_it(tmp_path):
    path = _one(tmp_path, "cyclegan", {"ngf": 4, "n_blocks": 1})
    with pytest.raises(CheckpointError, match=r"no B -> A checkpoint step_000004\.BtoA\."
                                              r"safetensors beside .*i2i-train --resume"):
        directed_checkpoint(path, "BtoA")


def test_an_imported_checkpoint_has_no_sibling_to_find(tmp_path):
    path = _one(tmp_path, "cyclegan", {"ngf": 4, "n_blocks": 1},
                name="latest_net_G_A.safetensors")
    with pytest.raises(CheckpointError, match="not named as a run's checkpoint"):
        directed_checkpoint(path, "BtoA")
    imported = _one(tmp_path, "cyclegan", {"ngf": 4, "n_blocks": 1},
                    name="latest_net_G_B.safetensors", direction="BtoA")
    assert directed_checkpoint(imported, "BtoA") == imported      # read from its meta


def test_a_sibling_of_another_step_or_direction_is_refused(tmp_path):
    path = _one(tmp_path, "cyclegan", {"ngf": 4, "n_blocks": 1})
    _one(tmp_path, "cyclegan", {"ngf": 4, "n_blocks": 1}, name="step_000004.BtoA.safetensors")
    with pytest.raises(CheckpointError, match=r"is not the B -> A generator of .*'AtoB'"):
        directed_checkpoint(path, "BtoA")
