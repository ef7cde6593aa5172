"""i2i-export for Mask CycleGAN: image and mask inputs through ONNX fp32/fp16, AOTInductor and
Triton, the gate's binary scheme masks, and the exported graphs against eager on new inputs.

One CLI export (fp32, fp16, AOTInductor, Triton) serves the module: each dynamo export and each
AOTInductor compile takes several seconds on a 2-core CPU.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from i2i.data.masks import parse_mask_spec
from i2i.data.shapes import SyntheticShapes
from i2i.engines.aoti import load_aoti
from i2i.export import parity, read_manifest
from i2i.export.cli import main
from i2i.export.to_onnx import onnx_runner
from i2i.models import build as build_model
from i2i.models import get_entry, load, make_config, save_checkpoint

from .test_triton_repo import config_signature, onnx_signature, parse_config

TINY = {"ngf": 4, "n_blocks": 1}
SIZE = 16
DATA = SyntheticShapes("circle2square", SIZE, seed=3).describe()
FP32_MAX_ABS = 1e-4                 # the gate's thresholds, restated
FP16_MIN_PSNR = 40.0
INPUTS, OUTPUTS = ["image", "mask"], ["translation"]


def maskcyclegan_checkpoint(root: Path) -> Path:
    torch.manual_seed(0)
    config = make_config("maskcyclegan", TINY)
    module = build_model("maskcyclegan", config)
    path = root / "runs" / "maskcyclegan" / "checkpoints" / "step_000009.safetensors"
    return save_checkpoint(path, "maskcyclegan", config, module.state_dict(), step=9,
                           meta={"data": DATA, "training": {"size": SIZE}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export folder, module, spec, the input batches of each parity.compare call)."""
    root = tmp_path_factory.mktemp("maskcyclegan")
    ckpt = maskcyclegan_checkpoint(root)
    calls: list[list[dict[str, torch.Tensor]]] = []
    compare = parity.compare

    def recording(reference, candidate, inputs):
        calls.append(inputs)
        return compare(reference, candidate, inputs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parity, "compare", recording)
        code = main(["--model", "maskcyclegan", "--fp16", "--runs", str(root / "runs"),
                     "--formats", "onnx,aoti,triton", "--batch", "1:2:4",
                     "--out", str(root / "export")])
    assert code == 0
    module, spec = load(ckpt)
    return root / "export", module, spec, calls


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    mse = (got.double() - want.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)       # peak-to-peak 2


def center_square(n: int, side: int, start: int, size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, start:start + side, start:start + side] = 1
    return mask


def new_images(size: tuple[int, int]) -> list[torch.Tensor]:
    """(3, 3, H, W) batches the gate never saw: random with a non-zero mean, and (square sizes)
    circles and squares of the train split at another seed."""
    g = torch.Generator().manual_seed(5)
    batches = [(torch.rand(3, 3, *size, generator=g) * 2 - 1 + 0.1).clamp(-1, 1)]
    if size[0] == size[1]:
        shapes = SyntheticShapes("circle2square", size[0], split="train", seed=11)
        batches.append(torch.stack([shapes.sample(d, i)[0] for d, i in (("A", 0), ("A", 1),
                                                                          ("B", 0))]))
    return batches


def new_masks(size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """(3, 1, H, W) masks the gate never drew: other scheme settings and seeds, a soft mask,
    a single pixel and all ones."""
    height, width = size
    pixel = torch.zeros(3, 1, height, width)
    pixel[:, :, height // 3, width // 2] = 1
    masks = {"rects": parse_mask_spec("rects:min_area=0.3,max_rects=3").sample(3, *size,
                                                                                 generator=21),
             "soft": torch.rand(3, 1, *size, generator=torch.Generator().manual_seed(6)),
             "pixel": pixel, "ones": torch.ones(3, 1, height, width)}
    if height == width:
        masks["center"] = parse_mask_spec("center:0.8").sample(3, *size)
    return masks


def test_manifest_records_image_and_mask_and_every_artifact_passes(exported):
    out, *_ = exported
    manifest = read_manifest(out)
    assert manifest["model"] == "maskcyclegan" and manifest["checkpoint"]["step"] == 9
    assert manifest["signatures"]["default"]["inputs"] == [
        {"name": "image", "shape": [-1, 3, -1, -1], "dtype": "float32", "range": [-1.0, 1.0],
         "kind": "image", "over": None, "nonempty": False},
        {"name": "mask", "shape": [-1, 1, -1, -1], "dtype": "float32", "range": [0.0, 1.0],
         "kind": "mask", "over": None, "nonempty": True}]
    assert [t["name"] for t in manifest["signatures"]["default"]["outputs"]] == OUTPUTS
    assert list(manifest["signatures"]) == ["default"] and "parity_failures" not in manifest
    artifacts = manifest["signatures"]["default"]["artifacts"]
    assert set(artifacts) == {"onnx", "onnx_fp16", "aoti", "triton"}
    for key in ("onnx", "onnx_fp16", "aoti"):
        assert artifacts[key]["passed"], key
        assert set(artifacts[key]["parity"]) == set(OUTPUTS), key
    for key in ("onnx", "aoti"):
        assert artifacts[key]["parity"]["translation"]["max_abs"] <= FP32_MAX_ABS
    assert artifacts["onnx_fp16"]["parity"]["translation"]["psnr"] >= FP16_MIN_PSNR
    assert artifacts["onnx"]["inputs"] == INPUTS and artifacts["onnx"]["outputs"] == OUTPUTS
    assert artifacts["onnx"]["dynamic"] == ["batch", "height", "width"]
    assert artifacts["aoti"]["batch"] == [1, 2, 4] and artifacts["aoti"]["size"] == [SIZE, SIZE]


def test_gate_checks_binary_scheme_masks_on_domain_images(exported):
    *_, calls = exported
    assert len(calls) == 3                                  # onnx, onnx_fp16, aoti
    seen = calls[0]
    shapes = SyntheticShapes("circle2square", SIZE, split="test", seed=3)
    domain = torch.stack([shapes.sample("A", i)[0] for i in range(2)])
    binary = [b for b in seen if set(b["mask"].unique().tolist()) <= {0.0, 1.0}]
    soft = [b for b in seen if not any(b is c for c in binary)]
    assert len(binary) == 2 and len(soft) == 3
    for batch in binary:
        assert torch.equal(batch["image"], domain)
    centered = [b for b in binary if torch.equal(b["mask"], center_square(2, 8, 4))]
    assert len(centered) == 1                                           # center:0.5
    rects = next(b["mask"] for b in binary if b is not centered[0])
    area = rects.mean(dim=(1, 2, 3))
    assert (area >= 0.15).all() and (area < 1).all()                    # rects' min_area
    assert not torch.equal(rects[0], rects[1])                          # one draw per image
    assert sum(torch.equal(b["image"], domain) for b in soft) == 1      # the domain batch
    for batch in soft:
        assert batch["mask"].shape == (2, 1, SIZE, SIZE)
        assert 0 <= batch["mask"].min() and batch["mask"].max() <= 1
        assert batch["mask"].std() > 0.2                                # uniform, not a constant


def test_parity_inputs_off_square_and_models_without_a_mask():
    spec = get_entry("maskcyclegan").spec(make_config("maskcyclegan", TINY))
    batches = parity.parity_inputs(spec, DATA, (16, 24), 2, parity.MASK_SCHEMES)
    assert len(batches) == 4                      # no domain images: rects, center, 2 random
    binary = [b for b in batches if set(b["mask"].unique().tolist()) <= {0.0, 1.0}]
    assert len(binary) == 2 and binary[0]["mask"].shape == (2, 1, 16, 24)
    assert sum(torch.equal(b["image"], binary[0]["image"]) for b in batches) == 3
    additive = get_entry("additive").spec(make_config("additive", {}))
    plain = parity.parity_inputs(additive, DATA, (SIZE, SIZE), 2)
    schemed = parity.parity_inputs(additive, DATA, (SIZE, SIZE), 2, parity.MASK_SCHEMES)
    assert len(schemed) == len(plain) == 3
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(schemed, plain, strict=True))


@pytest.mark.parametrize("size", [(SIZE, SIZE), (24, 32)])
def test_onnx_matches_eager_on_new_images_and_masks(exported, size):
    out, module, *_ = exported
    fp32, fp16 = session(out / "model.onnx"), session(out / "model.fp16.onnx")
    for image in new_images(size):
        for name, mask in new_masks(size).items():
            with torch.no_grad():
                want = module(image, mask)["translation"]
            feed = {"image": image.numpy(), "mask": mask.numpy()}
            got32 = torch.from_numpy(fp32.run(OUTPUTS, feed)[0])
            got16 = torch.from_numpy(fp16.run(OUTPUTS, feed)[0])
            assert got32.shape == got16.shape == want.shape
            assert (got32 - want).abs().max().item() <= FP32_MAX_ABS, name
            assert psnr(got16, want) >= FP16_MIN_PSNR, name


def test_two_masks_on_one_image_translate_differently(exported):
    out, module, *_ = exported
    fp32 = session(out / "model.onnx")
    image = new_images((SIZE, SIZE))[1]
    first = center_square(3, 8, 4)
    second = parse_mask_spec("rects").sample(3, SIZE, SIZE, generator=4)
    assert not torch.equal(first, second)
    results = []
    for mask in (first, second):
        with torch.no_grad():
            want = module(image, mask)["translation"]
        got = torch.from_numpy(fp32.run(OUTPUTS, {"image": image.numpy(),
                                                  "mask": mask.numpy()})[0])
        assert (got - want).abs().max().item() <= FP32_MAX_ABS
        results.append((want, got))
    (eager_first, onnx_first), (eager_second, onnx_second) = results
    assert (eager_first - eager_second).abs().max().item() > 0.1
    assert (onnx_first - onnx_second).abs().max().item() > 0.1


def test_aoti_package_matches_eager_and_names_a_misshapen_mask(exported):
    out, module, spec, _ = exported
    run = load_aoti(out / "model.pt2", spec)
    image = new_images((SIZE, SIZE))[1]
    for mask in new_masks((SIZE, SIZE)).values():
        for n in (1, 3):
            with torch.no_grad():
                want = module(image[:n], mask[:n])["translation"]
            got = run({"image": image[:n], "mask": mask[:n]})["translation"]
            assert (got - want).abs().max().item() <= FP32_MAX_ABS
    with pytest.raises(ValueError, match=r"input 'mask' has shape \(3, 3, 16, 16\); .*takes "
                                         r"\(N, 1, 16, 16\)"):
        run({"image": image, "mask": image})


def test_graphs_take_image_and_mask_in_float32(exported):
    out, *_ = exported
    for file in ("model.onnx", "model.fp16.onnx"):
        graph = onnx.load(str(out / file)).graph
        assert [i.name for i in graph.input] == INPUTS
        assert [o.name for o in graph.output] == OUTPUTS
        for value in list(graph.input) + list(graph.output):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, value.name
        channels = [value.type.tensor_type.shape.dim[1].dim_value for value in graph.input]
        assert channels == [3, 1]


def test_triton_config_declares_image_and_mask(exported):
    out, *_ = exported
    assert read_manifest(out)["signatures"]["default"]["artifacts"]["triton"] == {
        "repository": "triton", "models": ["maskcyclegan"], "onnx": "model.fp16.onnx",
        "max_batch_size": 4}
    config = parse_config(out / "triton" / "maskcyclegan" / "config.pbtxt")
    model_file = out / "triton" / "maskcyclegan" / "1" / "model.onnx"
    assert model_file.read_bytes() == (out / "model.fp16.onnx").read_bytes()
    assert config.name == "maskcyclegan" and config.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [3, -1, -1]),
                                                             ("mask", [1, -1, -1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("translation", [3, -1, -1])]
    assert config_signature(config) == onnx_signature(model_file)
    assert not (out / "triton" / "maskcyclegan_masked").exists()


def test_graph_clamps_an_output_driven_out_of_range(exported, tmp_path):
    out, module, *_ = exported
    # The same graph with its context encoder's weights x12: the unclamped output leaves [-1, 1].
    hot = copy.deepcopy(module)
    with torch.no_grad():
        hot.context_encoder.weight.mul_(12.0)
    model = onnx.load(str(out / "model.onnx"))
    weight = module.context_encoder.weight.detach().numpy()
    found = [t for t in model.graph.initializer if t.dims == list(weight.shape)
             and np.array_equal(numpy_helper.to_array(t), weight)]
    assert len(found) == 1
    found[0].CopyFrom(numpy_helper.from_array(weight * 12.0, found[0].name))
    onnx.save(model, str(tmp_path / "hot.onnx"))
    image = new_images((SIZE, SIZE))[1]
    mask = center_square(3, 8, 4)
    with torch.no_grad():
        raw = hot.raw(image, mask)
        want = hot(image, mask)["translation"]
    assert raw.abs().max().item() > 2
    got = torch.from_numpy(session(tmp_path / "hot.onnx").run(
        OUTPUTS, {"image": image.numpy(), "mask": mask.numpy()})[0])
    assert got.min().item() >= -1 and got.max().item() <= 1
    assert (got.abs() == 1).float().mean().item() > 0.05  # many pixels held at the bounds
    assert (got - want).abs().max().item() <= FP32_MAX_ABS


def test_runner_names_missing_and_misshapen_masks(exported):
    out, *_ = exported
    run = onnx_runner(out / "model.onnx")
    x = torch.zeros(2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"takes inputs \['image', 'mask'\], got \['image'\]"):
        run({"image": x})
    for mask in (torch.zeros(2, 3, SIZE, SIZE), torch.zeros(2, SIZE, SIZE)):
        shape = re.escape(str(tuple(mask.shape)))
        with pytest.raises(ValueError, match=rf"input 'mask' has shape {shape}; .*model.onnx "
                                             r"takes \(batch, 1, "):
            run({"image": x, "mask": mask})
    for mask in (torch.zeros(1, 1, SIZE, SIZE), torch.zeros(2, 1, 8, 8)):
        shape = re.escape(str(tuple(mask.shape)))
        with pytest.raises(ValueError, match=rf"share batch, height and width.*mask {shape}"):
            run({"image": x, "mask": mask})


@pytest.mark.parametrize("args,message", [
    (["--size", "18"], "multiples of 4"),
    (["--model", "cyclegan"], "is a 'maskcyclegan' checkpoint, not 'cyclegan'"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    ckpt = maskcyclegan_checkpoint(tmp_path)
    assert main(["--checkpoint", str(ckpt), "--formats", "onnx", "--out",
                 str(tmp_path / "e"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "e" / "model.onnx").exists()
