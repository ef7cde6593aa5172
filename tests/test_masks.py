"""Tests for i2i.data.masks: the centered-square, multi-rectangle and binary-attention samplers,
their text specs and errors, and attention maps from additive and LOMIT models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data.masks import (
    BinaryAttention,
    CenterSquare,
    RandomRects,
    additive_attention,
    binarize,
    model_attention,
    parse_mask_spec,
)
from i2i.models import build, make_config


def assert_binary_masks(masks: torch.Tensor, n: int, height: int, width: int) -> None:
    assert masks.shape == (n, 1, height, width)
    assert masks.dtype == torch.float32
    assert bool(((masks == 0) | (masks == 1)).all())


def write_gray(path: Path, values: list[list[int]]) -> Path:
    Image.fromarray(np.array(values, dtype=np.uint8), mode="L").save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Centered square


# (size, scale, first row/column, side): side = scale * size rounded half up, start = (size -
# side) // 2, worked out by hand.
@pytest.mark.parametrize("size, scale, start, side", [
    (20, 0.5, 5, 10), (20, 0.8, 2, 16), (20, 1.0, 0, 20), (15, 0.5, 3, 8), (16, 0.8, 1, 13)])
def test_center_square_geometry(size: int, scale: float, start: int, side: int) -> None:
    masks = parse_mask_spec(f"center:{scale}").sample(3, size, size, generator=0)
    assert_binary_masks(masks, 3, size, size)
    assert int(masks.sum()) == 3 * side * side
    rows = torch.nonzero(masks[0, 0].any(dim=1)).flatten()
    cols = torch.nonzero(masks[0, 0].any(dim=0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (start, start + side - 1)
    assert (cols.min().item(), cols.max().item()) == (start, start + side - 1)
    assert torch.equal(masks[1], masks[0]) and torch.equal(masks[2], masks[0])


def test_center_defaults_to_half_and_is_a_centered_square_on_any_picture() -> None:
    assert parse_mask_spec("center") == CenterSquare(0.5)
    mask = CenterSquare(0.5).sample(1, 16, 20)[0, 0]                 # side 8 = half of 16
    rows, cols = mask.nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 6, 13)
    assert mask.sum() == 64


# ---------------------------------------------------------------------------------------------
# Multiple rectangles (Algorithm 1)


@pytest.mark.parametrize("spec, min_area", [
    ("rects", 0.15),
    ("rects:min_area=0.2,max_rects=4,full=0.2", 0.2),
    ("rects:min_area=0.6,max_rects=2,min_size=0.05,max_size=0.3", 0.6),
])
def test_rects_cover_at_least_min_area_in_every_mask(spec: str, min_area: float) -> None:
    height, width = 24, 40
    masks = parse_mask_spec(spec).sample(300, height, width, generator=0)
    assert_binary_masks(masks, 300, height, width)
    covered = masks.sum(dim=(1, 2, 3))                              # pixels per mask
    assert bool((covered >= min_area * height * width).all())
    assert (covered < height * width).sum() > 200      # mostly partial masks, not full ones
    assert len(set(covered.tolist())) > 20             # and they vary


def test_one_rectangle_respects_min_and_max_size() -> None:
    # min_area 0 and max_rects 1: exactly one rectangle per mask. Sides in pixels: rows
    # 0.25 * 40 = 10 .. 0.5 * 40 = 20, columns 0.25 * 24 = 6 .. 12.
    height, width = 40, 24
    sampler = parse_mask_spec("rects:min_area=0,max_rects=1,min_size=0.25,max_size=0.5")
    masks = sampler.sample(200, height, width, generator=3)
    assert_binary_masks(masks, 200, height, width)
    tops, sides = set(), set()
    for mask in masks[:, 0]:
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        h = rows.max().item() - rows.min().item() + 1
        w = cols.max().item() - cols.min().item() + 1
        assert int(mask.sum()) == h * w, "not a single filled rectangle"
        assert 10 <= h <= 20 and 6 <= w <= 12
        tops.add((rows.min().item(), cols.min().item()))
        sides.add((h, w))
    assert len(tops) > 50 and len(sides) > 20


def test_rects_full_probability() -> None:
    full = parse_mask_spec("rects:full=1").sample(20, 16, 16, generator=0)
    assert bool((full == 1).all())
    masks = parse_mask_spec("rects:full=0.3").sample(400, 16, 16, generator=0)
    n_full = int((masks.sum(dim=(1, 2, 3)) == 16 * 16).sum())
    assert 0.22 * 400 <= n_full <= 0.38 * 400           # binomial sd 0.023: +-3.5 sd


def test_rects_min_area_one_is_the_full_mask() -> None:
    assert bool((RandomRects(min_area=1.0).sample(4, 12, 20, generator=1) == 1).all())


def test_same_seed_same_masks_other_seed_other_masks() -> None:
    sampler = parse_mask_spec("rects")
    first = sampler.sample(8, 32, 32, generator=7)
    assert torch.equal(first, sampler.sample(8, 32, 32, generator=7))
    assert torch.equal(first, sampler.sample(8, 32, 32, generator=torch.Generator()
                                             .manual_seed(7)))
    assert not torch.equal(first, sampler.sample(8, 32, 32, generator=8))
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(sampler.sample(8, 32, 32, g), sampler.sample(8, 32, 32, g))
    torch.manual_seed(11)
    global_first = sampler.sample(8, 32, 32)
    torch.manual_seed(11)
    assert torch.equal(global_first, sampler.sample(8, 32, 32))


def test_rects_defaults_are_algorithm_1() -> None:
    assert parse_mask_spec("rects") == RandomRects(min_area=0.15, max_rects=5, full=0.0,
                                                   min_size=0.1, max_size=1.0)


@pytest.mark.parametrize("sampler", [CenterSquare(0.8),
                                     RandomRects(0.2, 4, 0.2, 0.05, 0.5)])
def test_spec_text_round_trips(sampler) -> None:
    assert parse_mask_spec(sampler.spec()) == sampler


# ---------------------------------------------------------------------------------------------
# Binary attention


def test_attention_file_is_thresholded_at_its_own_size(tmp_path: Path) -> None:
    path = write_gray(tmp_path / "att.png", [[0, 63, 64, 127], [128, 191, 255, 10]])
    masks = parse_mask_spec(f"attention:{path}").sample(3, 2, 4, generator=0)
    assert_binary_masks(masks, 3, 2, 4)
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float32)
    for mask in masks:
        assert torch.equal(mask[0], expected)     # 127/255 < 0.5 <= 128/255
    low = parse_mask_spec(f"attention:{path},threshold=0.25").sample(1, 2, 4)
    # 63/255 = 0.247 < 0.25 <= 64/255 = 0.251
    assert torch.equal(low[0, 0], torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]],
                                               dtype=torch.float32))


def test_attention_map_is_resized_to_the_images(tmp_path: Path) -> None:
    path = write_gray(tmp_path / "half.png", [[0, 255]])             # left dark, right bright
    masks = BinaryAttention.from_file(path).sample(2, 6, 8)
    expected = torch.zeros(6, 8)
    expected[:, 4:] = 1
    assert torch.equal(masks[0, 0], expected) and torch.equal(masks[1, 0], expected)


def test_attention_path_may_hold_commas(tmp_path: Path) -> None:
    folder = tmp_path / "a,b"
    folder.mkdir()
    path = write_gray(folder / "m,1.png", [[255, 0]])
    sampler = parse_mask_spec(f"attention:{path},threshold=0.3")
    assert sampler.source == str(path) and sampler.threshold == 0.3
    assert parse_mask_spec(sampler.spec()).source == str(path)


def test_attention_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"attention: map file '.*nothere\.png' does not exist"):
        parse_mask_spec(f"attention:{tmp_path / 'nothere.png'}")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"attention: '.*junk\.png' is not a readable image"):
        parse_mask_spec(f"attention:{junk}")
    with pytest.raises(ValueError, match=r"attention: path is required, e\.g\. "
                                         r"attention:map\.png,threshold=0\.5"):
        parse_mask_spec("attention")
    good = write_gray(tmp_path / "g.png", [[0, 255]])
    with pytest.raises(ValueError, match=r"attention: threshold must be in \[0, 1\], got 1\.5"):
        parse_mask_spec(f"attention:{good},threshold=1.5")


def test_attention_tensor_maps_one_per_image() -> None:
    maps = torch.tensor([[0.2, 0.9], [0.6, 0.4]]).reshape(2, 1, 1, 2)
    masks = BinaryAttention(maps, threshold=0.5).sample(2, 1, 2)
    assert torch.equal(masks.flatten(), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"attention: 2 maps cannot mask 3 images"):
        BinaryAttention(maps).sample(3, 1, 2)
    with pytest.raises(ValueError, match=r"attention: the map's values must lie in \[0, 1\]"):
        BinaryAttention(maps * 2)
    with pytest.raises(ValueError, match=r"has no text spec"):
        BinaryAttention(maps).spec()


def test_binarize_threshold_is_inclusive() -> None:
    values = torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0])
    assert torch.equal(binarize(values, 0.5), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# Attention from other models


def test_additive_attention_mean_and_max_by_hand() -> None:
    mask = torch.zeros(2, 3, 1, 2)
    mask[0, :, 0, 0] = torch.tensor([-0.5, 0.5, 0.2])     # |.| mean 0.4, max 0.5
    mask[0, :, 0, 1] = torch.tensor([0.1, -0.1, 0.1])     # |.| mean 0.1, max 0.1
    mean = additive_attention(mask, "mean")                # image 1 stays all zero
    biggest = additive_attention(mask, "max")
    assert mean.shape == (2, 1, 1, 2)
    torch.testing.assert_close(mean.flatten(), torch.tensor([1.0, 0.25, 0.0, 0.0]))
    torch.testing.assert_close(biggest.flatten(), torch.tensor([1.0, 0.2, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"reduce must be 'mean' or 'max', got 'sum'"):
        additive_attention(mask, "sum")


def test_model_attention_from_an_additive_model() -> None:
    torch.manual_seed(0)
    model = build("additive", make_config("additive", {"ngf": 4, "n_blocks": 1})).eval()
    image = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    attention = model_attention(model, image)
    with torch.no_grad():
        magnitude = model(image)["mask"].abs().amax(dim=1, keepdim=True)
    expected = magnitude / magnitude.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(model_attention(model, image, reduce="max"), expected)
    assert attention.shape == (2, 1, 16, 20)
    assert attention.min() >= 0 and attention.amax(dim=(1, 2, 3)).tolist() == [1.0, 1.0]
    masks = BinaryAttention(attention, 0.5).sample(2, 16, 20)
    assert_binary_masks(masks, 2, 16, 20)
    with pytest.raises(ValueError, match=r"an additive model takes no exemplar"):
        model_attention(model, image, image)


def test_model_attention_from_lomit_needs_an_exemplar() -> None:
    torch.manual_seed(0)
    config = make_config("lomit", {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8,
                                   "mask_layers": 2})
    model = build("lomit", config).eval()
    g = torch.Generator().manual_seed(1)
    image, exemplar = (torch.rand(2, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
    with pytest.raises(ValueError, match=r"a lomit model needs an exemplar image"):
        model_attention(model, image)
    attention = model_attention(model, image, exemplar)
    with torch.no_grad():
        expected = model(image, exemplar)["mask"]
    assert torch.equal(attention, expected)
    assert attention.shape == (2, 1, 16, 16)
    assert attention.min() >= 0 and attention.max() <= 1


def test_model_attention_refuses_a_model_without_a_mask() -> None:
    model = build("cyclegan", make_config("cyclegan", {"ngf": 4, "n_blocks": 1})).eval()
    with pytest.raises(ValueError, match=r"attention maps come from additive or lomit models, "
                                         r"not CycleGANTranslator"):
        model_attention(model, torch.zeros(1, 3, 16, 16))


# ---------------------------------------------------------------------------------------------
# Spec errors


@pytest.mark.parametrize("text, message", [
    ("rect", "unknown mask scheme 'rect' (did you mean 'rects'?); known: center, rects, "
             "attention (e.g. center:0.5"),
    ("blob:3", "unknown mask scheme 'blob'; known: center, rects, attention"),
    ("", "unknown mask scheme ''; known: center, rects, attention"),
    ("rects:min_areaa=0.2", "rects: unknown parameter 'min_areaa'; parameters: min_area, "
                            "max_rects, full, min_size, max_size"),
    ("rects:max_rects=2.5", "rects: max_rects must be an integer, got '2.5'"),
    ("rects:min_area=lots", "rects: min_area must be a number, got 'lots'"),
    ("rects:min_area=1.2", "rects: min_area must be in [0, 1], got 1.2"),
    ("rects:max_rects=0", "rects: max_rects must be >= 1, got 0"),
    ("rects:full=-0.1", "rects: full must be in [0, 1], got -0.1"),
    ("rects:min_size=0.5,max_size=0.2", "rects: max_size must be in [0.5, 1], got 0.2"),
    ("rects:min_size=0", "rects: min_size must be in (0, 1], got 0"),
    ("rects:full=", "rects: full has no value"),
    ("rects:full=0.1,full=0.2", "rects: parameter 'full' is given twice"),
    ("rects:full=0.1,4", "rects: full must be a number, got '0.1,4'"),
    ("center:1.5", "center: scale must be in (0, 1], got 1.5"),
    ("center:0", "center: scale must be in (0, 1], got 0"),
    ("center:half", "center: scale must be a number, got 'half'"),
    ("center:0.5,0.8", "center: scale must be a number, got '0.5,0.8'"),
])
def test_spec_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_mask_spec(text)


def test_masks_need_a_positive_size() -> None:
    with pytest.raises(ValueError, match=r"masks need n, height and width >= 1, got 0, 8, 8"):
        RandomRects().sample(0, 8, 8)
