"""Signatures, tensor kinds and the engine layer: the parity gate runs the classes that serve,
the additive strength runs inside the model on every engine, and one batch check refuses bad
knobs and names with an InputError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from i2i.engines import ENGINES, EngineSpec, check_batch, open_engine
from i2i.engines.ort import OnnxRuntimeEngine
from i2i.export import ParityError, build, read_manifest
from i2i.models import MODELS, InputError, signatures
from i2i.models import build as build_model
from i2i.models.spec import KINDS, ModelSpec, TensorSpec, image_spec

from .test_export import checkpoint, options

SIZE = 16


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("signatures")
    ckpt = checkpoint(tmp)
    return ckpt, build(ckpt, options(tmp, fp16=True, formats=("onnx", "triton")))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_signature_names_a_method_and_kinds_the_runtime_knows(name):
    entry = MODELS[name]
    module = build_model(name, entry.config())
    every = entry.signatures(entry.config())
    assert next(iter(every)) == "default"
    assert signatures(module) == every
    for label, spec in every.items():
        assert callable(getattr(module, spec.method)), (label, spec.method)
        for t in (*spec.inputs, *spec.outputs):
            assert t.kind in KINDS and (len(t.shape) == 4) == t.spatial, (label, t)
            if t.over is not None:
                assert t.over in spec.names, (label, t)
        assert spec.of_kind("image"), label            # every signature translates a picture


def test_unknown_kind_and_repeated_names_are_refused_where_declared():
    with pytest.raises(ValueError, match="kind 'picture'; known: image, mask"):
        TensorSpec("x", (-1, 3, -1, -1), kind="picture")
    with pytest.raises(ValueError, match=r"names \['image'\] more than once"):
        ModelSpec((image_spec("image"),), (image_spec("image"),), 4)


def test_the_gate_runs_the_engine_class_that_serves(tmp_path, monkeypatch):
    """An onnxruntime engine that serves wrong values makes the export fail: the gate runs the
    served code path, not a runner of its own."""
    served = OnnxRuntimeEngine.run

    def off_by_a_little(self, batch):
        return {k: v + 1e-3 for k, v in served(self, batch).items()}

    monkeypatch.setattr(OnnxRuntimeEngine, "run", off_by_a_little)
    with pytest.raises(ParityError, match=r"onnx (translation|mask): max abs error 1\.00e-03"):
        build(checkpoint(tmp_path), options(tmp_path))


def test_the_gate_runs_the_aoti_engine_too(tmp_path, monkeypatch):
    monkeypatch.setattr(ENGINES["aoti"], "run", lambda self, batch: {
        t.name: torch.zeros(batch["image"].shape) for t in self.spec.outputs})
    with pytest.raises(ParityError, match=r"aoti (translation|mask): max abs error"):
        build(checkpoint(tmp_path), options(tmp_path, formats=("aoti",)))


def test_every_signature_is_exported_and_gated(exported):
    _, out = exported
    manifest = read_manifest(out)
    assert manifest["format_version"] == 2
    assert list(manifest["signatures"]) == ["default", "strength"]
    strength = manifest["signatures"]["strength"]
    assert strength["method"] == "with_strength"
    assert [(t["name"], t["kind"], t["shape"]) for t in strength["inputs"]] == [
        ("image", "image", [-1, 3, -1, -1]), ("strength", "knob", [-1, 1])]
    for key, file in (("onnx", "model.strength.onnx"), ("onnx_fp16", "model.strength.fp16.onnx")):
        entry = strength["artifacts"][key]
        assert entry["file"] == file and entry["passed"] and len(entry["sha256"]) == 64
        assert set(entry["parity"]) == {"translation", "mask"}
    config = (out / "triton" / "additive_strength" / "config.pbtxt").read_text()
    assert 'name: "strength"' in config and "dims: [ 1 ]" in config


@pytest.mark.parametrize("engine", ["eager", "fused", "onnxruntime"])
def test_strength_runs_inside_the_model_on_every_engine(exported, engine):
    ckpt, out = exported
    opened = open_engine(engine, export_dir=out, checkpoint=ckpt if engine != "onnxruntime"
                         else None, max_batch_size=4)
    reference = open_engine("eager", checkpoint=ckpt)
    x = images(3, seed=4)
    strength = torch.tensor([[0.0], [0.5], [2.0]])
    got = opened.run({"image": x, "strength": strength})
    plain = reference.run({"image": x})
    # strength 0 gives the input back; the mask is the same whatever the strength
    assert (got["translation"][0] - x[0]).abs().max() <= 1e-6
    assert (got["mask"] - plain["mask"]).abs().max() <= 1e-4
    want = torch.clamp(x + strength.view(-1, 1, 1, 1) * plain["mask"], -1, 1)
    assert (got["translation"] - want).abs().max() <= 1e-4


@pytest.mark.parametrize(("batch", "message"), [
    ({"image": images(1), "strength": torch.tensor([[5.0]])},
     r"'strength' must lie in \[0, 4\]; it holds values from 5 to 5"),
    ({"image": images(1), "strength": torch.tensor([[float("nan")]])}, r"'strength' must lie"),
    ({"image": images(2), "strength": torch.tensor([[1.0]])},
     r"different batch sizes \[1, 2\]"),
    ({"image": images(1), "strength": torch.ones(1, 1, 1, 1)},
     r"'strength' has shape \[1, 1, 1, 1\]; expected \[-1, 1\]"),
    ({"image": images(1), "mask": torch.ones(1, 1, SIZE, SIZE)},
     r"unknown input 'mask'; signatures besides the default: strength \['image', 'strength'\]"),
    ({}, r"missing input\(s\) \['image'\]"),
])
def test_one_batch_check_refuses_bad_knobs_and_names(exported, batch, message):
    _, out = exported
    engine = open_engine("onnxruntime", export_dir=out)
    with pytest.raises(InputError, match=message):
        engine.run(batch)
    with pytest.raises(InputError, match=message):
        check_batch(engine.spec, batch)


def test_an_export_without_a_signature_says_which_file_is_missing(exported, tmp_path):
    _, out = exported
    stripped = tmp_path / "export"
    shutil.copytree(out, stripped, ignore=shutil.ignore_patterns("model.strength.onnx"))
    engine = open_engine("onnxruntime", export_dir=stripped)
    assert list(engine.spec.signatures) == ["default"]
    with pytest.raises(InputError, match=r"signature 'strength': .* no fp32 strength variant "
                                         r"\(model\.strength\.onnx\).*re-export"):
        engine.run({"image": images(1), "strength": torch.ones(1, 1)})


def test_an_export_of_the_old_format_is_refused_with_re_export(exported, tmp_path):
    _, out = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 1; this i2i reads format 2 .*re-export"):
        open_engine("onnxruntime", export_dir=old)


def test_engine_spec_reads_the_default_signature():
    spec = EngineSpec("additive", signatures(build_model("additive", MODELS["additive"].config())),
                      4, None, 4, (SIZE, SIZE), "fp32", "cpu")
    assert [t.name for t in spec.inputs] == ["image"]
    assert spec.signature({"image": 0, "strength": 0}) == "strength"
    assert spec.model_signatures == spec.signatures
