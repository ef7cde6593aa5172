"""UNIT end to end: a few training steps, both directions exported (ONNX fp32 and fp16, gated,
and a Triton repository), then translated by i2i-translate and served by i2i-serve."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from i2i.export import ExportOptions, read_manifest
from i2i.export import build as build_export
from i2i.export.cli import main as export
from i2i.models import build, load, make_config, save_checkpoint
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
                           "--formats", "onnx,triton", "--batch", "1:2:4"]) == 0
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
    folder = root / "exports" / FOLDERS[direction]
    config = text_format.Parse((folder / "triton" / "unit" / "config.pbtxt").read_text(),
                               mc.ModelConfig())
    assert config.name == "unit" and config.platform == "onnxruntime_onnx"
    assert [t.name for t in config.input] == ["image"]
    assert [t.name for t in config.output] == ["translation"]
    # With --fp16 the Triton model is the fp16 graph (float32 I/O).
    assert artifacts["triton"]["onnx"] == "model.fp16.onnx"
    assert (folder / "triton" / "unit" / "1" / "model.onnx").read_bytes() == \
        (folder / "model.fp16.onnx").read_bytes()


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


def test_the_fp16_graph_keeps_the_layer_norm_statistics_in_fp32(tmp_path):
    # The decoder's LayerNorm (GroupNorm with one group) exports as an InstanceNormalization over
    # a reshape, which the fp16 graph runs in fp32: a variance of activations in the hundreds
    # overflows fp16 (65504). onnxruntime's CPU provider runs many fp16 ops in fp32 anyway, so
    # the graph itself is checked, not only its parity.
    torch.manual_seed(0)
    config = make_config("unit", {"ngf": 4, "n_res": 1})
    checkpoint = save_checkpoint(tmp_path / "step_000001.safetensors", "unit", config,
                                 build("unit", config).state_dict(), step=1,
                                 meta={"training": {"size": 16}})
    out = build_export(checkpoint, ExportOptions(out=tmp_path / "export", formats=("onnx",),
                                                 fp16=True, batch=(1, 2, 2), size=(16, 16),
                                                 dynamic_size=False, log=lambda *_: None))
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out / "model.fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    # encoder: stem, 2 halvings, 2 in its residual block; decoder: 2 in its block, 2 LayerNorms
    assert len(norms) == 1 + 2 + 2 + 2 + 2
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in norms)
