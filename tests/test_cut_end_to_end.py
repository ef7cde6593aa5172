"""cut end to end: i2i-train a few steps -> i2i-export (ONNX fp32 and fp16, AOTInductor, Triton)
-> i2i-translate and the server (KServe v2), and the exported graph against eager on sizes the
gate never saw.

One CLI export serves the module: each dynamo export and AOTInductor compile takes seconds on a
2-core CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import tritonclient.http as httpclient
from PIL import Image

from i2i.engines import open_engine
from i2i.export import read_manifest
from i2i.export.cli import main as export
from i2i.export.parity import FP32_MAX_ABS
from i2i.models import load
from i2i.runtime.inprocess import serving
from i2i.runtime.translate_cli import main as translate
from i2i.train.cli import main as train

SIZE = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A three-step FastCUT run under runs/cut, trained through the command line."""
    root = tmp_path_factory.mktemp("cut")
    code = train(["--model", "cut", "--fastcut", "--data", "synthetic:circle2square",
                  "--size", str(SIZE), "--steps", "3", "--batch-size", "2", "--ngf", "4",
                  "--n-blocks", "1", "--ndf", "4", "--disc-layers", "2", "--no-progress",
                  "--out", str(root / "runs" / "cut")])
    assert code == 0
    return root


@pytest.fixture(scope="module")
def exported(run) -> Path:
    cwd = Path.cwd()
    os.chdir(run)
    try:
        assert export(["--model", "cut", "--runs", "runs", "--fp16",
                       "--formats", "onnx,aoti,triton", "--batch", "1:2:4"]) == 0
    finally:
        os.chdir(cwd)
    return run / "exports" / "cut"


def test_every_artifact_passes_the_gate(exported):
    manifest = read_manifest(exported)
    assert manifest["model"] == "cut" and manifest["checkpoint"]["step"] == 3
    artifacts = manifest["signatures"]["default"]["artifacts"]
    assert {"onnx", "onnx_fp16", "aoti", "triton"} <= set(artifacts)
    for key in ("onnx", "onnx_fp16", "aoti"):
        assert artifacts[key]["passed"], key
    assert artifacts["onnx"]["parity"]["translation"]["max_abs"] <= FP32_MAX_ABS
    assert (exported / "triton" / "cut" / "config.pbtxt").exists()
    # The blur filters are constants of the graph, applied depthwise (one group per channel).
    graph = onnx.load(str(exported / "model.onnx")).graph
    groups = [a.i for n in graph.node if n.op_type in ("Conv", "ConvTranspose")
              for a in n.attribute if a.name == "group"]
    assert sorted(g for g in groups if g > 1) == [8, 8, 16, 16]      # 2 ngf, 4 ngf, twice


def test_onnx_matches_eager_at_other_sizes(run, exported):
    module, _ = load(run / "runs" / "cut" / "checkpoints" / "step_000003.safetensors")
    session = ort.InferenceSession(str(exported / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(4)
    for shape in ((1, 3, 24, 40), (3, 3, 32, 20)):
        x = torch.rand(shape, generator=g) * 2 - 1
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = module(x)["translation"].numpy()
        assert np.abs(got - want).max() <= FP32_MAX_ABS, shape


def test_i2i_translate_runs_the_export(exported, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(inputs / "a.png")
    out = tmp_path / "out"
    assert translate([str(inputs), str(out), "--model", str(exported), "--no-progress"]) == 0
    assert "translated 1" in capsys.readouterr().out
    assert Image.open(out / "a.png").size == (28, 20)


def test_the_server_answers_with_the_exported_translation(run, exported):
    module, _ = load(run / "runs" / "cut" / "checkpoints" / "step_000003.safetensors")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with serving(open_engine("onnxruntime", export_dir=exported, device="cpu")) as url:
        client = httpclient.InferenceServerClient(url=url[len("http://"):])
        tensor = httpclient.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x.numpy(), binary_data=True)
        got = client.infer("cut", [tensor]).as_numpy("translation")
    with torch.no_grad():
        want = module(x)["translation"].numpy()
    assert got.shape == (2, 3, SIZE, SIZE)
    assert np.abs(got - want).max() <= FP32_MAX_ABS
