"""Resolution policies on fake engines whose answers are known: native pads and crops, tiles
blend back to the per-pixel answer, mask keeps untouched pixels exactly, resize squashes."""

from __future__ import annotations

import asyncio

import pytest
import torch

from i2i.engines import EngineSpec
from i2i.models import InputError
from i2i.models.spec import Composite, ModelSpec, image_spec, mask_spec, signed_mask_spec
from i2i.runtime.resolution import Resolution, choose, translate

ADDITIVE = ModelSpec((image_spec("image"),), (image_spec("translation"),
                                             signed_mask_spec("mask")), 4,
                     composite=Composite("translation", "mask", "add"))
BLEND = ModelSpec((image_spec("image"), mask_spec("mask", nonempty=True)),
                  (image_spec("translation"),), 4,
                  composite=Composite("translation", "mask", "blend"))
WHOLE = ModelSpec((image_spec("image"),), (image_spec("translation"),), 8)


def engine_spec(signature: ModelSpec, size=None) -> EngineSpec:
    return EngineSpec("fake", {"default": signature}, 8, size, signature.size_multiple,
                      (16, 16), "fp32", "cpu")


def picture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 2 - 1


class Recorder:
    """A per-pixel model (no spatial context): mask = tanh(2x) on the red channel where x > 0.5,
    translation = clamp(x + mask). Records every batch's shape and checks the sizes."""

    def __init__(self, multiple: int, fixed=None):
        self.multiple, self.fixed, self.shapes = multiple, fixed, []

    async def __call__(self, batch):
        x = batch["image"]
        self.shapes.append(tuple(x.shape))
        assert x.shape[2] % self.multiple == 0 and x.shape[3] % self.multiple == 0
        if self.fixed is not None:
            assert tuple(x.shape[2:]) == self.fixed
        mask = torch.where(x > 0.5, torch.tanh(2 * x), torch.zeros_like(x))
        if "mask" in batch and batch["mask"].dim() == 4 and batch["mask"].shape[1] == 1:
            m = batch["mask"]
            return {"translation": x * (1 - m) + (-x) * m}
        return {"translation": (x + mask).clamp(-1, 1), "mask": mask}


def run(signature, inputs, policy, size=None, working=None, recorder=None):
    recorder = recorder or Recorder(signature.size_multiple, size)
    out = asyncio.run(translate(recorder, engine_spec(signature, size), signature, inputs,
                                Resolution(policy, working)))
    return out, recorder


def test_native_pads_to_the_multiple_and_crops_back():
    x = picture(33, 17)
    out, rec = run(ADDITIVE, {"image": x}, "native")
    assert rec.shapes == [(1, 3, 36, 20)]
    want = torch.where(x > 0.5, torch.tanh(2 * x), torch.zeros_like(x))
    assert out["mask"].shape == (1, 3, 33, 17) and torch.equal(out["mask"], want)
    assert torch.equal(out["translation"], (x + want).clamp(-1, 1))


def test_tiles_cover_the_picture_and_blend_to_the_per_pixel_answer():
    x = picture(70, 45, seed=1)
    out, rec = run(ADDITIVE, {"image": x}, "tile", working=24)
    assert set(rec.shapes) == {(1, 3, 24, 24)} and len(rec.shapes) == 4 * 3
    want = torch.where(x > 0.5, torch.tanh(2 * x), torch.zeros_like(x))
    assert out["mask"].shape == (1, 3, 70, 45)
    assert (out["mask"] - want).abs().max() <= 1e-6


def test_a_picture_smaller_than_a_fixed_tile_is_padded_and_cropped():
    x = picture(10, 30, seed=2)
    out, rec = run(ADDITIVE, {"image": x}, "auto", size=(16, 16))
    assert set(rec.shapes) == {(1, 3, 16, 16)} and out["translation"].shape == (1, 3, 10, 30)


def test_mask_policy_keeps_untouched_pixels_exactly_and_adds_the_change():
    x = picture(96, 64, seed=3) * 0.2
    x[:, :, 48:] += 0.7                          # only the bottom half is above 0.5: changed
    out, rec = run(ADDITIVE, {"image": x}, "mask", working=32)
    assert rec.shapes == [(1, 3, 32, 20)]        # the picture's aspect, multiples of 4
    top = out["translation"][:, :, :40]          # clear of the upsampling's reach
    assert torch.equal(top, x[:, :, :40])
    assert (out["translation"] - x)[:, :, 56:].abs().min() > 0.1   # the bottom half changed
    assert out["mask"].shape == (1, 3, 96, 64)


def test_mask_policy_blends_through_a_full_size_mask_input():
    x = picture(40, 40, seed=4)
    m = torch.zeros(1, 1, 40, 40)
    m[:, :, 10:30, 5:20] = 1
    out, _ = run(BLEND, {"image": x, "mask": m}, "mask", working=16)
    keep = m[0, 0] == 0
    assert torch.equal(out["translation"][0][:, keep], x[0][:, keep])


def test_tiles_where_a_required_mask_is_empty_keep_the_picture():
    x = picture(48, 48, seed=5)
    m = torch.zeros(1, 1, 48, 48)
    m[:, :, :8, :8] = 1                          # only the first tile selects anything
    out, rec = run(BLEND, {"image": x, "mask": m}, "tile", working=24)
    assert len(rec.shapes) < 9                   # tiles with an empty mask never ran
    assert torch.allclose(out["translation"][:, :, 30:, 30:], x[:, :, 30:, 30:])


def test_resize_squashes_to_the_model_size_and_back():
    out, rec = run(ADDITIVE, {"image": picture(50, 30)}, "resize")
    assert rec.shapes == [(1, 3, 16, 16)] and out["translation"].shape == (1, 3, 50, 30)


@pytest.mark.parametrize(("policy", "size", "signature", "message"), [
    ("native", (16, 16), ADDITIVE, "resolution=native needs an engine that takes any size"),
    ("mask", None, WHOLE, "resolution=mask applies to models whose output is the input changed"),
])
def test_impossible_policies_are_refused(policy, size, signature, message):
    with pytest.raises(InputError, match=message):
        choose(Resolution(policy), engine_spec(signature, size), signature, (32, 32))


def test_auto_is_native_within_the_budget_and_tile_beyond():
    spec = engine_spec(ADDITIVE)
    assert choose(Resolution(), spec, ADDITIVE, (2048, 2048)) == "native"
    assert choose(Resolution(), spec, ADDITIVE, (4000, 6000)) == "tile"
    assert choose(Resolution(), engine_spec(ADDITIVE, (16, 16)), ADDITIVE, (8, 8)) == "tile"
    with pytest.raises(InputError, match="unknown resolution policy 'huge'"):
        Resolution("huge")
