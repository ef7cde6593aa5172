"""Precisions as export products: int8 (calibrated) and bf16 beside fp32, each through its own
gate; the openvino engine; engine auto; and their errors.

One tiny additive checkpoint (ngf 8, 1 block, 32x32, trained on nothing: seeded weights, its
meta naming synthetic circle2square data) is exported once per module with formats onnx and
openvino and precisions bf16 and int8, calibrated on 8 images.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from i2i.data import domain_samples
from i2i.engines import engine_availability, open_engine
from i2i.engines import openvino as ov_engine
from i2i.export import ExportOptions, build
from i2i.export.calibration import CalibrationError, calibration_images
from i2i.export.cli import main as export_main
from i2i.manifest import read_manifest, write_manifest
from i2i.models import build as build_model
from i2i.models import make_config, save_checkpoint

pytest.importorskip("openvino", reason="the openvino engine's tests need the openvino package "
                                       "(pip install 'i2i[openvino]'; the dev extra has it)")

SIZE = (32, 32)
DATA = {"kind": "synthetic", "task": "circle2square", "seed": 0}
# The gate's thresholds, restated (i2i.export.parity.thresholds).
FP32_MAX_ABS, BF16_MIN_PSNR, INT8_MIN_PSNR = 1e-4, 40.0, 30.0


def checkpoint(folder: Path, data: dict | None = DATA) -> Path:
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 8, "n_blocks": 1})
    meta = {"training": {"size": SIZE[0]}, **({"data": data} if data else {})}
    return save_checkpoint(folder / "step_000001.safetensors", "additive", config,
                           build_model("additive", config).state_dict(), step=1, meta=meta)


def options(out: Path, **kwargs) -> ExportOptions:
    given = {"formats": ("onnx", "openvino"), "precisions": ("bf16", "int8"),
             "calibration_count": 8, "batch": (1, 2, 4), "size": SIZE, "log": lambda *_: None}
    return ExportOptions(out=out, **{**given, **kwargs})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("precision")
    ckpt = checkpoint(root)
    return ckpt, build(ckpt, options(root / "export"))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)       # peak-to-peak 2


def test_every_precision_passes_its_own_gate_and_fills_the_manifest(exported):
    manifest = read_manifest(exported[1])
    artifacts = manifest["signatures"]["default"]["artifacts"]
    want = {"onnx": "fp32", "onnx_int8": "int8", "openvino": "fp32", "openvino_bf16": "bf16",
            "openvino_int8": "int8"}
    assert set(artifacts) == set(want)
    for key, precision in want.items():
        entry = artifacts[key]
        assert entry["passed"] is True and entry["precision"] == precision, key
        assert entry["timing"]["ms_per_image"] > 0 and entry["timing"]["batch"] == 2
    assert artifacts["openvino_bf16"]["threshold"] == "PSNR >= 40 dB"
    assert artifacts["onnx_int8"]["threshold"] == "PSNR >= 30 dB on the domain's images"
    for key in ("onnx_int8", "openvino_int8"):
        assert min(v["psnr"] for v in artifacts[key]["parity"].values()) >= INT8_MIN_PSNR
        assert set(artifacts[key]["parity_random"]) == {"translation", "mask"}
    assert min(v["psnr"] for v in artifacts["openvino_bf16"]["parity"].values()) >= BF16_MIN_PSNR
    assert max(v["max_abs"] for v in artifacts["openvino"]["parity"].values()) <= FP32_MAX_ABS
    # Calibration: 8 images of the checkpoint's own domain, after the 2 the gate judges with.
    calibration = manifest["calibration"]
    assert calibration["images"] == 8 and calibration["held_out_for_parity"] == 2
    assert "synthetic" in calibration["source"] and "99.99th percentile" in calibration["method"]
    assert artifacts["onnx_int8"]["calibration"]["images"] == 8
    assert artifacts["openvino"]["file"] == "model.onnx"
    assert artifacts["openvino_int8"]["file"] == "model.int8.openvino.onnx"
    assert "model.int8.openvino.onnx: " in calibration["method"]
    assert "99.999th percentile" in artifacts["openvino_int8"]["method"]


def test_int8_graph_is_symmetric_per_channel_qdq_on_convolutions(exported):
    graph = onnx.load(str(exported[1] / "model.int8.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    every = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    dequant = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    # The stem reads the 3-channel picture: too little work for int8, kept fp32 (its weight a
    # plain initializer); every other convolution reads and weighs through Q/DQ pairs.
    stem, convs = every[0], every[1:]
    assert stem.input[1] in init and init[stem.input[1]].shape[1] == 3
    assert stem.input[0] not in dequant
    manifest = read_manifest(exported[1])
    assert manifest["signatures"]["default"]["artifacts"]["onnx_int8"]["kept_fp32"] == \
        [stem.name]
    # 2 down, 2 in the residual block, 2 up, the head
    assert len(convs) == 7
    assert all(n.input[0] in dequant and n.input[1] in dequant for n in convs)
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = init.get(node.input[2])
            # int8 activations and weights, int32 biases; every zero point 0 (symmetric)
            assert zero is not None and zero.dtype in (np.int8, np.int32), node.name
            assert not zero.any(), node.name
    weight_scales = [init[dequant[n.input[1]].input[1]] for n in convs]
    assert all(s.size == init[dequant[n.input[1]].input[0]].shape[1 if n.op_type ==
                                                                    "ConvTranspose" else 0]
               for s, n in zip(weight_scales, convs, strict=True))
    assert {n.op_type for n in graph.node} >= {"InstanceNormalization", "Tanh"}


def test_openvino_int8_graph_quantizes_convolution_inputs_unsigned_asymmetric(exported):
    """OpenVINO's graph: a pair before every convolution but the stem, uint8 activations with
    their own zero points, int8 symmetric weights per channel, and no pair after a convolution
    (its output goes to an instance norm in fp32)."""
    graph = onnx.load(str(exported[1] / "model.int8.openvino.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequant = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")][1:]
    assert len(convs) == 7
    assert all(n.input[0] in dequant and n.input[1] in dequant for n in convs)
    assert not quantized & {n.output[0] for n in convs}
    activation_zeros = [init[dequant[n.input[0]].input[2]] for n in convs]
    weight_zeros = [init[dequant[n.input[1]].input[2]] for n in convs]
    assert all(z.dtype == np.uint8 for z in activation_zeros)
    assert any(z.any() for z in activation_zeros)           # asymmetric: not all at 0
    assert all(z.dtype == np.int8 and not z.any() for z in weight_zeros)


@pytest.mark.parametrize(("name", "precision", "limit"), [
    ("openvino", "fp32", None), ("openvino", "bf16", BF16_MIN_PSNR),
    ("openvino", "int8", INT8_MIN_PSNR), ("onnxruntime", "int8", INT8_MIN_PSNR)])
def test_engines_match_eager_on_domain_images(exported, name, precision, limit):
    ckpt, out = exported
    engine = open_engine(name, export_dir=out, precision=precision)
    reference = open_engine("eager", checkpoint=ckpt, precision="fp32")
    images, _ = domain_samples(DATA, SIZE, 20, "A")
    x = images[-3:]                              # neither calibrated on nor gated with
    want, got = reference.run({"image": x}), engine.run({"image": x})
    assert engine.spec.precision == precision and engine.spec.size is None
    for key, value in want.items():
        assert got[key].shape == value.shape == (3, 3, *SIZE)
        if limit is None:
            assert (got[key] - value).abs().max().item() <= FP32_MAX_ABS, key
        else:
            assert limit <= psnr(got[key], value) < 100, key      # close, and not fp32


def test_bf16_is_refused_where_the_cpu_lacks_it(exported, tmp_path, monkeypatch):
    from i2i.engines.tensorrt import availability

    ckpt, out = exported
    monkeypatch.setattr(ov_engine, "bf16_support", lambda: "this CPU has no bf16 support")
    with pytest.raises(RuntimeError, match="engine 'openvino' cannot run bf16 here: this CPU "
                                           "has no bf16 support"):
        open_engine("openvino", export_dir=out, precision="bf16")
    assert "no bf16" in engine_availability("openvino", out, None, precision="bf16")
    assert engine_availability("openvino", out, None, precision="int8") is None
    # Export records the skip with its reason and still writes the rest; so does TensorRT's
    # int8 plan where TensorRT or a GPU is missing.
    again = build(ckpt, options(tmp_path / "export", formats=("onnx", "openvino", "trt")))
    artifacts = read_manifest(again)["signatures"]["default"]["artifacts"]
    assert artifacts["openvino_bf16"] == {"skipped": "this CPU has no bf16 support"}
    assert artifacts["openvino"]["passed"] and artifacts["openvino_int8"]["passed"]
    reason = availability()
    if reason is not None:
        assert artifacts["tensorrt_int8"] == artifacts["tensorrt"] == {"skipped": reason}
    else:                                   # a GPU machine: the int8 plan went through its gate
        assert artifacts["tensorrt_int8"]["precision"] == "int8"


def test_bf16_support_reads_openvino_capabilities(monkeypatch):
    import openvino as ov

    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, key: ["FP32", "INT8"])
    assert "bf16 needs AVX-512 BF16 or AMX" in ov_engine.bf16_support()
    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, key: ["BF16", "FP32"])
    assert ov_engine.bf16_support() is None


def test_openvino_missing_is_refused(exported, tmp_path, monkeypatch):
    ckpt, out = exported
    monkeypatch.setattr(ov_engine, "availability", lambda: "the openvino package is not "
                                                           "installed; pip install openvino")
    with pytest.raises(RuntimeError, match="engine 'openvino' cannot run here: the openvino "
                                           "package is not installed"):
        open_engine("openvino", export_dir=out)
    with pytest.raises(ValueError, match="format openvino asked for, but the openvino package"):
        build(ckpt, options(tmp_path / "x"))


def _timed(out: Path, tmp: Path, ms: dict[str, float]) -> Path:
    """A copy of the export whose manifest records the timings `ms` (artifact key -> ms)."""
    copy = tmp / "timed"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for key, entry in manifest["signatures"]["default"]["artifacts"].items():
        if key in ms:
            entry["timing"]["ms_per_image"] = ms[key]
        else:
            entry.pop("timing", None)
    write_manifest(copy / "manifest.json", manifest)
    return copy


def test_auto_opens_the_fastest_passing_artifact_that_opens_here(exported, tmp_path,
                                                                 monkeypatch):
    timed = _timed(exported[1], tmp_path, {"onnx": 9.0, "onnx_int8": 4.0, "openvino_bf16": 2.0,
                                           "openvino_int8": 3.0})
    engine = open_engine("auto", export_dir=timed)
    assert (engine.name, engine.spec.precision) == ("openvino", "bf16")
    assert engine.spec.choice.startswith("auto: openvino bf16, the fastest here of 4")
    only = open_engine("auto", export_dir=timed, precision="int8")
    assert (only.name, only.spec.precision) == ("openvino", "int8")
    # Without bf16 on this CPU the next one is taken, and the choice says why.
    monkeypatch.setattr(ov_engine, "bf16_support", lambda: "no bf16 on this CPU")
    engine = open_engine("auto", export_dir=timed)
    assert (engine.name, engine.spec.precision) == ("openvino", "int8")
    assert "not opened here: openvino bf16: engine 'openvino' cannot run bf16 here: no bf16 " \
           "on this CPU" in engine.spec.choice


def test_auto_skips_artifacts_that_missed_their_gate(exported, tmp_path):
    timed = _timed(exported[1], tmp_path, {"onnx": 9.0, "onnx_int8": 1.0})
    manifest = json.loads((timed / "manifest.json").read_text())
    manifest["signatures"]["default"]["artifacts"]["onnx_int8"]["passed"] = False
    write_manifest(timed / "manifest.json", manifest)
    engine = open_engine("auto", export_dir=timed)
    assert (engine.name, engine.spec.precision) == ("onnxruntime", "fp32")


def test_auto_errors(exported, tmp_path):
    with pytest.raises(ValueError, match="engine 'auto' chooses among an export's artifacts"):
        open_engine("auto", checkpoint=exported[0])
    untimed = _timed(exported[1], tmp_path, {})
    with pytest.raises(ValueError, match="engine 'auto' found no artifact .* \\(none has a timing "
                                         "and a passed gate.*re-export"):
        open_engine("auto", export_dir=untimed)
    assert "found no fp16 artifact" in engine_availability("auto", exported[1], None,
                                                           precision="fp16")


def test_export_precision_errors(exported, tmp_path):
    ckpt = exported[0]
    with pytest.raises(ValueError, match="bf16 artifacts run on the openvino engine: add "
                                         "openvino to --formats"):
        build(ckpt, options(tmp_path / "a", formats=("onnx",)))
    with pytest.raises(ValueError, match=r"unknown precision\(s\) \['int4'\]"):
        build(ckpt, options(tmp_path / "b", precisions=("int4",)))
    with pytest.raises(ValueError, match="fp16 and int8 artifacts are ONNX graphs: add onnx"):
        build(ckpt, options(tmp_path / "c", formats=("aoti",), precisions=("int8",)))


def test_calibration_sources_and_their_errors(tmp_path):
    data_free = {}
    with pytest.raises(CalibrationError, match=r"training data \(none recorded\) gives none.*"
                                               "--calibration DIR"):
        calibration_images(None, data_free, SIZE, 4, skip=2)
    with pytest.raises(CalibrationError, match="no such folder"):
        calibration_images(str(tmp_path / "nowhere"), data_free, SIZE, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no picture that decodes"):
        calibration_images(str(empty), data_free, SIZE, 4)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(empty / "one.png")
    with pytest.raises(CalibrationError, match="holds 1 images; int8 needs more than 2"):
        calibration_images(str(empty), data_free, SIZE, 4, skip=2)
    with pytest.raises(CalibrationError, match="unknown synthetic data 'synthetic:nope'"):
        calibration_images("synthetic:nope", data_free, SIZE, 4)
    with pytest.raises(CalibrationError, match="--calibration-count must be at least 1"):
        calibration_images(None, DATA, SIZE, 0)
    with pytest.raises(CalibrationError, match="gives no images at 32x48 .*square"):
        calibration_images("synthetic:circle2square", data_free, (32, 48), 4)
    got = calibration_images("synthetic:circle2square", data_free, SIZE, 4, skip=2)
    assert got.images.shape == (4, 3, *SIZE) and got.held_out.shape == (2, 3, *SIZE)
    assert not torch.equal(got.images[0], got.held_out[0])


def test_cli_int8_for_a_checkpoint_without_data(tmp_path, capsys):
    """No training data recorded: --calibration gives the images, and the gate judges int8 on
    the ones held out of calibration."""
    ckpt = checkpoint(tmp_path, data=None)
    base = ["--checkpoint", str(ckpt), "--formats", "onnx", "--batch", "1:2:4",
            "--precision", "int8", "--calibration-count", "6", "--out", str(tmp_path / "e")]
    assert export_main(base) == 2
    assert "pass --calibration DIR" in capsys.readouterr().err
    assert export_main([*base, "--calibration", "synthetic:circle2square"]) == 0
    manifest = read_manifest(tmp_path / "e")
    assert manifest["calibration"]["images"] == 6
    assert manifest["signatures"]["default"]["artifacts"]["onnx_int8"]["passed"]


def test_int8_graph_is_recognised_for_tensorrt(exported):
    from i2i.export.tensorrt import onnx_precision

    assert onnx_precision(exported[1] / "model.int8.onnx") == "int8"
    assert onnx_precision(exported[1] / "model.onnx") == "float32"


def test_serve_openvino_bf16_and_auto_say_what_runs(exported, tmp_path):
    """i2i-serve --engine openvino --precision bf16 serves; --engine auto reports its choice."""
    import urllib.request

    from i2i.runtime.inprocess import serving

    from .server_utils import as_input, as_png_pixels, decoded, png_bytes, running, translate

    ckpt, out = exported
    with running(["--export", str(out), "--engine", "openvino", "--precision", "bf16"]) as s:
        with urllib.request.urlopen(f"{s.url}/v2/models/additive") as r:
            meta = json.loads(r.read())
        assert meta["engine"] == {"name": "openvino", "precision": "bf16", "device": "cpu",
                                  "choice": ""}
        picture = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        status, body = translate(s.url, {"image": png_bytes(picture)})
        assert status == 200
        eager = open_engine("eager", checkpoint=ckpt, precision="fp32")
        want = as_png_pixels(eager.run({"image": as_input(picture)})["translation"].numpy())
        assert np.abs(decoded(body) - want).mean() < 1.0        # bf16: within a pixel level
    engine = open_engine("auto", export_dir=out)
    with serving(engine) as url, urllib.request.urlopen(f"{url}/v2/models/additive") as r:
        chosen = json.loads(r.read())["engine"]
    assert chosen["name"] == engine.name and chosen["choice"].startswith(f"auto: {engine.name}")


def test_translate_with_auto_prints_and_records_its_choice(exported, tmp_path, capsys):
    from i2i.runtime.translate_cli import main as translate_main

    pictures = tmp_path / "in"
    pictures.mkdir()
    Image.new("RGB", (32, 32), (90, 90, 90)).save(pictures / "a.png")
    code = translate_main([str(pictures), str(tmp_path / "out"), "--model", str(exported[1]),
                           "--engine", "auto", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("auto: ")
    page = (tmp_path / "out" / "index.html").read_text()
    assert "(auto: " in page and "timed artifacts that passed their parity gates" in page


def test_python_api_opens_auto_and_openvino_int8(exported):
    import i2i

    ckpt, out = exported
    images, _ = domain_samples(DATA, SIZE, 20, "A")
    x = images[-1]                                               # (3, H, W), unseen
    want = open_engine("eager", checkpoint=ckpt).run({"image": x[None]})["translation"][0]
    for opening in ({"engine": "auto"}, {"engine": "openvino", "precision": "int8"}):
        model = i2i.open(out, **opening)
        got = model.translate(x)
        assert got.shape == x.shape and psnr(got, want) >= INT8_MIN_PSNR, opening
    assert model.engine.spec.precision == "int8" and model.engine.name == "openvino"


def test_openvino_runs_on_the_cpu_only_and_int8_needs_batches(exported, tmp_path):
    from i2i.export.quantize import to_int8

    with pytest.raises(ValueError, match="engine 'openvino' runs on the CPU; use device='cpu'"):
        open_engine("openvino", export_dir=exported[1], device="cuda")
    with pytest.raises(ValueError, match="needs at least one calibration batch"):
        to_int8(exported[1] / "model.onnx", tmp_path / "x.onnx", [])


def test_export_timing_takes_the_fastest_of_as_many_runs_as_fit(monkeypatch):
    """The timing auto ranks by: the fastest run, more runs for fast graphs, at least three
    for slow ones. A run disturbed by the machine (here: the first two) does not count."""
    from i2i.export import gate

    delays = iter([0.03, 0.02] + [0.001] * 1000)
    batch = {"image": torch.zeros(2, 3, 4, 4)}
    fast = gate.timing(lambda _: time.sleep(next(delays)), batch)
    assert gate.MIN_RUNS < fast["runs"] <= gate.MAX_RUNS and fast["batch"] == 2
    assert 0.5 / 2 <= fast["ms_per_image"] < 10 / 2           # ~1 ms a run, 2 rows
    monkeypatch.setattr(gate, "TIMING_BUDGET_S", 0.0)
    slow = gate.timing(lambda _: time.sleep(0.01), batch)
    assert slow["runs"] == gate.MIN_RUNS and slow["ms_per_image"] >= 10 / 2
