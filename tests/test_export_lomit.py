"""i2i-export for LOMIT: two image inputs, the masked variant, their parity gate and Triton configs.

One export (both variants, fp32 and fp16, through the CLI) serves the whole module: each dynamo
export takes several seconds on a 2-core CPU.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.data.scenes import AttributeShapes
from i2i.export import parity, read_manifest
from i2i.export.cli import main
from i2i.export.to_onnx import onnx_runner
from i2i.models import build as build_model
from i2i.models import get_entry, load, make_config, save_checkpoint, signatures
from i2i.models.spec import ModelSpec, TensorSpec

from .test_triton_repo import config_signature, onnx_signature, parse_config

TINY = {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2}
SIZE = 16
DATA = AttributeShapes(SIZE, seed=3).describe()
FP32_MAX_ABS = 1e-4                 # the gate's thresholds, restated
FP16_MIN_PSNR = 40.0
FILES = {("plain", "fp32"): "model.onnx", ("plain", "fp16"): "model.fp16.onnx",
         ("masked", "fp32"): "model.masked.onnx", ("masked", "fp16"): "model.masked.fp16.onnx"}
INPUTS = {"plain": ["image", "exemplar"], "masked": ["image", "exemplar", "mask"]}
OUTPUTS = {"plain": ["translation", "mask", "exemplar_mask"],
           "masked": ["translation", "exemplar_mask"]}


def lomit_checkpoint(root: Path) -> Path:
    torch.manual_seed(0)
    config = make_config("lomit", TINY)
    module = build_model("lomit", config)
    # At initialisation the style codes hardly depend on the image they come from (the exemplar
    # moves the translation by ~1e-4); x4 on the style heads and MLPs makes that ~1e-2.
    with torch.no_grad():
        for part in (module.style_fg.head, module.style_bg.head, module.mlp_fg, module.mlp_bg):
            for layer in part.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight.mul_(4.0)
    path = root / "runs" / "lomit" / "checkpoints" / "step_000007.safetensors"
    return save_checkpoint(path, "lomit", config, module.state_dict(), step=7,
                           meta={"data": DATA, "training": {"size": SIZE}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lomit")
    ckpt = lomit_checkpoint(root)
    code = main(["--model", "lomit", "--fp16", "--runs", str(root / "runs"), "--formats",
                 "onnx,triton", "--batch", "1:2:4", "--out", str(root / "export")])
    assert code == 0
    module, _ = load(ckpt)
    return root / "export", module


def psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    mse = (got.double() - want.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)       # peak-to-peak 2


def new_batches(size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """Inputs the gate never saw: random ones with a non-zero mean, and (square sizes) scenes of
    the train split at another seed, paired with other scenes, masked by their disc regions."""
    g = torch.Generator().manual_seed(5)
    batches = [{"image": torch.rand(3, 3, *size, generator=g) * 2 - 1 + 0.1,
                "exemplar": torch.rand(3, 3, *size, generator=g) * 2 - 1,
                "mask": torch.rand(3, 1, *size, generator=g)}]
    if size[0] == size[1]:
        scenes = AttributeShapes(size[0], split="train", seed=11, length=6)
        images, metas = zip(*(scenes.sample(i) for i in range(6)), strict=True)
        batches.append({"image": torch.stack(images[:3]), "exemplar": torch.stack(images[3:]),
                        "mask": torch.stack([m.region(size[0]).float()[None]
                                             for m in metas[:3]])})
    return batches


def eager(module: nn.Module, variant: str, batch: dict[str, torch.Tensor]
          ) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if variant == "plain":
            return module(batch["image"], batch["exemplar"])
        return module.translate(batch["image"], batch["exemplar"], mask=batch["mask"])


def test_manifest_records_both_variants_and_their_parity(exported):
    out, _ = exported
    manifest = read_manifest(out)
    assert manifest["model"] == "lomit" and manifest["checkpoint"]["step"] == 7
    assert [t["name"] for t in manifest["signatures"]["default"]["inputs"]] == INPUTS["plain"]
    assert [t["name"] for t in manifest["signatures"]["default"]["outputs"]] == OUTPUTS["plain"]
    masked = manifest["signatures"]["masked"]
    assert masked["method"] == "masked"
    assert [t["name"] for t in masked["inputs"]] == INPUTS["masked"]
    assert [t["name"] for t in masked["outputs"]] == OUTPUTS["masked"]
    assert masked["inputs"][2] == {"name": "mask", "shape": [-1, 1, -1, -1], "dtype": "float32",
                                   "range": [0.0, 1.0], "kind": "mask", "over": None,
                                   "nonempty": False}
    assert "parity_failures" not in manifest
    for variant, artifacts in (("plain", manifest["signatures"]["default"]["artifacts"]),
                               ("masked", masked["artifacts"])):
        assert set(artifacts) == {"onnx", "onnx_fp16", "triton"}
        fp32, fp16 = artifacts["onnx"], artifacts["onnx_fp16"]
        assert fp32["file"] == FILES[variant, "fp32"] and fp16["file"] == FILES[variant, "fp16"]
        assert fp32["inputs"] == INPUTS[variant] and fp32["outputs"] == OUTPUTS[variant]
        assert fp32["dynamic"] == ["batch", "height", "width"]
        assert fp32["passed"] and fp16["passed"]
        assert set(fp32["parity"]) == set(OUTPUTS[variant])
        assert max(v["max_abs"] for v in fp32["parity"].values()) <= FP32_MAX_ABS
        assert min(v["psnr"] for v in fp16["parity"].values()) >= FP16_MIN_PSNR


@pytest.mark.parametrize("variant", ["plain", "masked"])
def test_graphs_take_the_spec_inputs_in_float32(exported, variant):
    out, _ = exported
    for precision in ("fp32", "fp16"):
        graph = onnx.load(str(out / FILES[variant, precision])).graph
        assert [i.name for i in graph.input] == INPUTS[variant]
        assert [o.name for o in graph.output] == OUTPUTS[variant]
        for value in list(graph.input) + list(graph.output):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, value.name
        channels = [d.dim_value for d in graph.input[-1].type.tensor_type.shape.dim][1]
        assert channels == (1 if variant == "masked" else 3)


@pytest.mark.parametrize("variant", ["plain", "masked"])
@pytest.mark.parametrize("size", [(24, 24), (20, 28)])
def test_onnx_matches_eager_on_new_pairs(exported, variant, size):
    out, module = exported
    fp32 = ort.InferenceSession(str(out / FILES[variant, "fp32"]),
                                providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(str(out / FILES[variant, "fp16"]),
                                providers=["CPUExecutionProvider"])
    for batch in new_batches(size):
        assert not torch.equal(batch["image"], batch["exemplar"])
        want = eager(module, variant, batch)
        feed = {k: batch[k].numpy() for k in INPUTS[variant]}
        for session, precision in ((fp32, "fp32"), (fp16, "fp16")):
            got = dict(zip(OUTPUTS[variant], session.run(OUTPUTS[variant], feed), strict=True))
            for name in OUTPUTS[variant]:
                value = torch.from_numpy(got[name])
                assert value.shape == want[name].shape, name
                if precision == "fp32":
                    assert (value - want[name]).abs().max().item() <= FP32_MAX_ABS, name
                else:
                    assert psnr(value, want[name]) >= FP16_MIN_PSNR, name


def test_masked_graph_honours_the_mask(exported):
    out, _ = exported
    session = ort.InferenceSession(str(out / "model.masked.onnx"),
                                   providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(8)
    image = (torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1).numpy()
    first, second = ((torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1).numpy()
                     for _ in range(2))
    zeros, ones = np.zeros((2, 1, SIZE, SIZE), np.float32), np.ones((2, 1, SIZE, SIZE), np.float32)

    def translate(exemplar, mask):
        return session.run(["translation", "exemplar_mask"],
                           {"image": image, "exemplar": exemplar, "mask": mask})

    # Mask 0 everywhere: the input keeps its own style, whatever the exemplar.
    assert np.abs(translate(first, zeros)[0] - translate(second, zeros)[0]).max() <= 1e-6
    # Mask 1 everywhere: the exemplar's style is taken, so the exemplar matters.
    assert np.abs(translate(first, ones)[0] - translate(second, ones)[0]).max() > 1e-3
    assert np.abs(translate(first, zeros)[0] - translate(first, ones)[0]).max() > 1e-3
    # The user mask replaces the input's mask only; the exemplar's is computed as without one.
    _, _, exemplar_mask = plain.run(None, {"image": image, "exemplar": first})
    assert np.abs(translate(first, ones)[1] - exemplar_mask).max() <= FP32_MAX_ABS


def test_triton_configs_declare_every_input(exported):
    out, _ = exported
    manifest = read_manifest(out)
    assert manifest["signatures"]["default"]["artifacts"]["triton"]["models"] == ["lomit"]
    assert manifest["signatures"]["masked"]["artifacts"]["triton"] == {
        "repository": "triton", "models": ["lomit_masked"], "onnx": "model.masked.fp16.onnx",
        "max_batch_size": 4}
    for folder, variant in (("lomit", "plain"), ("lomit_masked", "masked")):
        config = parse_config(out / "triton" / folder / "config.pbtxt")
        model_file = out / "triton" / folder / "1" / "model.onnx"
        assert model_file.read_bytes() == (out / FILES[variant, "fp16"]).read_bytes()
        assert config.name == folder and config.max_batch_size == 4
        assert [t.name for t in config.input] == INPUTS[variant]
        assert [t.name for t in config.output] == OUTPUTS[variant]
        assert config_signature(config) == onnx_signature(model_file)
    masked = parse_config(out / "triton" / "lomit_masked" / "config.pbtxt")
    assert list(masked.input[2].dims) == [1, -1, -1]
    assert [list(t.dims) for t in masked.input[:2]] == [[3, -1, -1], [3, -1, -1]]


def test_parity_inputs_pair_real_scenes_with_other_exemplars():
    spec = get_entry("lomit").spec(make_config("lomit", TINY))
    variant = signatures(build_model("lomit", make_config("lomit", TINY)))["masked"]
    batches = parity.parity_inputs(variant, DATA, (SIZE, SIZE), batch=2)
    plain = parity.parity_inputs(spec, DATA, (SIZE, SIZE), batch=2)
    assert len(batches) == len(plain) == 3
    scenes = AttributeShapes(SIZE, split="test", seed=3, length=4)
    real = batches[0]
    for i in range(2):
        image, meta = scenes.sample(i)
        assert torch.equal(real["image"][i], image)
        assert torch.equal(real["mask"][i, 0], meta.region(SIZE).float())
        assert not torch.equal(real["exemplar"][i], image)
        assert torch.equal(real["exemplar"][i], scenes.sample(2 + i)[0])
    for batch in batches[1:]:
        assert batch["image"].shape == batch["exemplar"].shape == (2, 3, SIZE, SIZE)
        assert batch["mask"].shape == (2, 1, SIZE, SIZE)
        assert 0 <= batch["mask"].min() and batch["mask"].max() <= 1
        assert batch["mask"].std() > 0.2                       # uniform, not a constant
        assert not torch.equal(batch["image"], batch["exemplar"])
    for ours, theirs in zip(batches, plain, strict=True):     # both variants see the same pairs
        assert set(theirs) == {"image", "exemplar"}
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_runner_names_missing_inputs_and_mismatched_shapes(exported):
    out, _ = exported
    run = onnx_runner(out / "model.masked.onnx")
    x = torch.zeros(2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"takes inputs \['exemplar', 'image', 'mask'\]"):
        run({"image": x, "exemplar": x})
    with pytest.raises(ValueError, match=r"share batch, height and width.*exemplar \(1, 3"):
        run({"image": x, "exemplar": x[:1], "mask": torch.zeros(2, 1, SIZE, SIZE)})
    with pytest.raises(ValueError, match=r"share batch, height and width.*mask \(2, 1, 8, 8\)"):
        run({"image": x, "exemplar": x, "mask": torch.zeros(2, 1, 8, 8)})


def test_a_signature_must_not_repeat_a_name():
    # The masked signature's outputs leave out the mask it takes: ONNX and Triton names are
    # unique, so a signature naming one twice is refused where it is declared.
    spec = get_entry("lomit").spec(make_config("lomit", TINY))
    with pytest.raises(ValueError, match=r"names \['exemplar'\] more than once"):
        ModelSpec((*spec.inputs, TensorSpec("exemplar", (-1, 3, -1, -1))), spec.outputs,
                  spec.size_multiple, method="masked")
    assert list(signatures(build_model("additive", make_config("additive", {"ngf": 4})))) == [
        "default", "strength"]


@pytest.mark.parametrize("args,message", [
    (["--size", "18"], "multiples of 4"),
    (["--model", "lomt"], "unknown model 'lomt' \\(did you mean 'lomit'\\?\\)"),
    (["--model", "additive"], "is a 'lomit' checkpoint, not 'additive'"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    ckpt = lomit_checkpoint(tmp_path)
    assert main(["--checkpoint", str(ckpt), "--formats", "onnx", "--out",
                 str(tmp_path / "e"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "e" / "model.onnx").exists()
