"""The Python API (i2i.translate, i2i.open) and i2i-translate: pictures of any size and kind come
back at their own size and kind; folders resume per model, mirror sub-folders, exit 1 on a
failed file."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import i2i
from i2i.engines import open_engine
from i2i.models import InputError, build, make_config, save_checkpoint
from i2i.runtime.inprocess import serving
from i2i.runtime.server import ServerConfig
from i2i.runtime.translate_cli import main

from .server_utils import (
    pixels,
    tiny_checkpoint,
    tiny_lomit_checkpoint,
    tiny_maskcyclegan_checkpoint,
)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(pixels(width, height, seed))


@pytest.fixture(scope="module")
def additive(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("additive"))


def test_a_photo_comes_back_at_its_own_size_in_its_own_kind(additive, tmp_path):
    picture = photo(517, 333)
    picture.save(tmp_path / "photo.png")
    from_path = i2i.translate(str(tmp_path / "photo.png"), model=additive)
    from_pil = i2i.translate(picture, model=additive)
    assert isinstance(from_path, Image.Image) and from_path.size == (517, 333)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_pil))
    array = i2i.translate(np.asarray(picture), model=additive)
    assert isinstance(array, np.ndarray) and array.shape == (333, 517, 3)
    assert np.array_equal(array, np.asarray(from_pil))
    tensor = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float() / 127.5 - 1
    out = i2i.translate(tensor, model=additive)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 333, 517)


@pytest.fixture(scope="module")
def calm(tmp_path_factory) -> Path:
    """A random additive generator whose head is scaled down: its mask is small, and below
    0.005 in part of a picture, as a trained model's is outside the objects it changes."""
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1})
    module = build("additive", config)
    with torch.no_grad():
        module.generator.head.weight.mul_(0.02)
        module.generator.head.bias.zero_()
    return save_checkpoint(tmp_path_factory.mktemp("calm") / "calm.safetensors", "additive",
                           config, module.state_dict(), meta={"training": {"size": 32}})


def test_the_mask_policy_keeps_what_the_mask_leaves_alone(calm):
    model = i2i.open(calm, resolution="mask")
    picture = photo(517, 333, seed=1)
    x = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float() / 127.5 - 1
    mask = model.translate(x, output="mask")                       # (3, 333, 517)
    out = np.asarray(model.translate(picture)).astype(int)
    calm = (mask.abs().amax(0) < 0.005).numpy()
    assert calm.mean() > 0.01, "the test needs pixels the mask leaves alone"
    assert np.abs(out - np.asarray(picture).astype(int))[calm].max() <= 1


def test_a_517x333_photo_comes_back_sharp_through_every_entrance(calm, tmp_path, capsys):
    """/v1/translate, i2i-translate and i2i.translate under the mask policy: the photo's own
    size, the same pixels, and within one level of the input where the mask is below 0.005."""
    picture = photo(517, 333, seed=7)
    (tmp_path / "in").mkdir()
    picture.save(tmp_path / "in" / "photo.png")
    model = i2i.open(calm, resolution="mask")
    api = np.asarray(model.translate(picture))
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(calm),
                 "--resolution", "mask", "--no-progress"]) == 0
    folder = np.asarray(Image.open(tmp_path / "out" / "photo.png").convert("RGB"))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    with serving(open_engine("eager", checkpoint=calm), ServerConfig(max_batch=2)) as url:
        request = urllib.request.Request(f"{url}/v1/translate?resolution=mask",
                                         data=buffer.getvalue(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    assert api.shape == folder.shape == served.shape == (333, 517, 3)
    assert np.array_equal(api, folder) and np.array_equal(api, served)
    x = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float() / 127.5 - 1
    calm_pixels = (model.translate(x, output="mask").abs().amax(0) < 0.005).numpy()
    assert 0.01 < calm_pixels.mean() < 0.99
    assert np.abs(api.astype(int) - np.asarray(picture).astype(int))[calm_pixels].max() <= 1


def test_lists_are_translated_together_and_knobs_run_in_the_model(additive):
    model = i2i.open(additive)
    pictures = [photo(40, 28, seed=i) for i in range(3)]
    outs = model.translate(pictures)
    assert [o.size for o in outs] == [(40, 28)] * 3
    same = model.translate(pictures[0], strength=0.0)
    assert np.array_equal(np.asarray(same), np.asarray(pictures[0]))
    batch = torch.rand(2, 3, 20, 24) * 2 - 1
    assert model.translate(batch).shape == (2, 3, 20, 24)
    with pytest.raises(InputError, match="additive has no input 'exemplar'"):
        model.translate(pictures[0], exemplar=pictures[1])
    with pytest.raises(InputError, match=r"'strength' must lie in \[0, 4\]"):
        model.translate(pictures[0], strength=9)


def test_exemplars_masks_and_schemes_by_name(tmp_path):
    lomit = i2i.open(tiny_lomit_checkpoint(tmp_path / "l"))
    out = lomit.translate(photo(30, 20), exemplar=photo(50, 60, seed=2))
    assert out.size == (30, 20)
    assert lomit.translate(photo(30, 20), exemplar=photo(16, 16), output="exemplar_mask"
                           ).size == (30, 20)
    masked = i2i.open(tiny_maskcyclegan_checkpoint(tmp_path / "m"))
    assert masked.translate(photo(36, 24), mask="center:0.5").size == (36, 24)
    drawn = np.zeros((24, 36), np.uint8)
    drawn[4:12, 4:12] = 255
    assert masked.translate(photo(36, 24), mask=Image.fromarray(drawn)).size == (36, 24)
    with pytest.raises(InputError, match="'mask' selects no pixel"):
        masked.translate(photo(36, 24), mask=Image.fromarray(np.zeros((24, 36), np.uint8)))


def test_a_picture_over_the_limit_names_the_setting(additive, tmp_path):
    photo(64, 48).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"3072 pixels; the limit is 1000 \(raise it with "
                                         r"i2i.open\(\.\.\., max_pixels=N\)"):
        i2i.translate(str(tmp_path / "big.png"), model=additive, max_pixels=1000)


def test_a_one_channel_model_is_fed_grey(tmp_path):
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1, "channels": 1})
    ckpt = save_checkpoint(tmp_path / "grey.safetensors", "additive", config,
                           build("additive", config).state_dict(), meta={"training": {"size": 16}})
    out = i2i.translate(photo(20, 12), model=ckpt)
    assert out.mode == "L" and out.size == (20, 12)


def folder(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        photo(24 + 4 * i, 20, seed=i).save(root / name)
    return root


def test_translate_command_resumes_per_model_and_mirrors_sub_folders(tmp_path, capsys):
    first, second = tiny_checkpoint(tmp_path / "a"), tiny_checkpoint(tmp_path / "b", seed=1)
    inputs = folder(tmp_path / "in", ["one.png", "two.jpg", "sub/three.png"])
    args = [str(inputs), str(tmp_path / "out"), "--no-progress", "--recursive"]
    assert main([*args, "--model", str(first)]) == 0
    assert "translated 3, already done 0, failed 0" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "sub" / "three.png").size == (32, 20)
    made = (tmp_path / "out" / "one.png").read_bytes()
    assert main([*args, "--model", str(first)]) == 0
    assert "translated 0, already done 3, failed 0" in capsys.readouterr().out
    assert main([*args, "--model", str(second)]) == 0           # another model: redone
    assert "translated 3, already done 0, failed 0" in capsys.readouterr().out
    assert (tmp_path / "out" / "one.png").read_bytes() != made
    assert "i2i" in Image.open(io.BytesIO(made)).text


def test_translate_command_exits_1_when_a_file_failed_and_2_for_bad_flags(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "a")
    inputs = folder(tmp_path / "in", ["ok.png"])
    (inputs / "broken.png").write_bytes(b"\x89PNG broken")
    args = [str(inputs), str(tmp_path / "out"), "--model", str(ckpt), "--no-progress"]
    assert main(args) == 1
    assert "translated 1, already done 0, failed 1" in capsys.readouterr().out
    assert main([*args, "--knob", "strength=lots"]) == 2
    assert "--knob strength=lots: the value must be a number" in capsys.readouterr().err
    assert main([*args, "--input", "exemplar"]) == 2
    assert "--input 'exemplar' must be NAME=VALUE" in capsys.readouterr().err
    assert main([*args, "--resolution", "native", "--engine", "eager",
                 "--knob", "strength=0"]) == 1                 # the broken file still fails
    same = np.asarray(Image.open(tmp_path / "out" / "ok.png").convert("RGB"))
    assert np.array_equal(same, np.asarray(photo(24, 20, seed=0)))
