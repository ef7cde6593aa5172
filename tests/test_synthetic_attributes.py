"""Tests for i2i.data.scenes: determinism, region-locality of each attribute, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from i2i.data.scenes import ATTRIBUTES, AttributeShapes


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """(S, S) bool -> (S, S) bool grown by one pixel (3x3, 8-connected)."""
    grown = F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)
    return grown[0, 0] > 0.5


def _erode(mask: torch.Tensor) -> torch.Tensor:
    """(S, S) bool -> (S, S) bool shrunk by one pixel: the complement of the dilated complement."""
    return ~_dilate(~mask)


@pytest.mark.parametrize("size", [32, 64])
def test_deterministic_range_and_shape(size: int) -> None:
    data = AttributeShapes(size=size, length=20)
    image, meta = data.sample(3)
    again, meta_again = AttributeShapes(size=size, length=20).sample(3)
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert torch.equal(image, again) and meta == meta_again
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert meta.region(size).shape == (size, size) and meta.region(size).dtype == torch.bool
    # Other indices, seeds and splits give other images.
    assert not torch.equal(image, data.sample(4)[0])
    assert not torch.equal(image, AttributeShapes(size=size, length=20, seed=1).sample(3)[0])
    assert not torch.equal(image, AttributeShapes(size=size, length=20, split="test").sample(3)[0])
    # The disc stays inside the image with its soft edge.
    cx, cy = meta.center
    assert meta.radius + 0.5 <= min(cx, cy, size - cx, size - cy)


@pytest.mark.parametrize("background", [0, 1])
def test_object_color_changes_only_the_object(background: int) -> None:
    size = 64
    data = AttributeShapes(size=size, noise=0.0, length=10)
    for index in range(5):
        red, meta_red = data.sample(index, {"object_color": 0, "background": background})
        blue, meta_blue = data.sample(index, {"object_color": "blue", "background": background})
        assert meta_red.center == meta_blue.center and meta_red.radius == meta_blue.radius
        region = meta_red.region(size)
        outside = ~_dilate(region)
        assert torch.equal(red[:, outside], blue[:, outside])
        # The object's mean colour moves clearly (red channel down, blue channel up).
        shift = (blue[:, region].mean(dim=1) - red[:, region].mean(dim=1)).abs()
        assert shift.max() > 0.5, shift


@pytest.mark.parametrize("color", [0, 1])
def test_background_changes_only_the_background(color: int) -> None:
    size = 64
    data = AttributeShapes(size=size, noise=0.0, length=10)
    for index in range(5):
        plain, meta = data.sample(index, {"object_color": color, "background": "plain"})
        striped, meta_s = data.sample(index, {"object_color": color, "background": 1})
        assert meta.stripe_period is None and 5.0 <= meta_s.stripe_period <= 9.0
        inside = _erode(meta.region(size))
        assert inside.sum() > 0
        assert torch.equal(plain[:, inside], striped[:, inside])
        outside = ~_dilate(meta.region(size))
        std_plain = plain[:, outside].std(dim=1).mean()
        std_striped = striped[:, outside].std(dim=1).mean()
        assert std_plain < 1e-6 and std_striped > std_plain + 0.15, (std_plain, std_striped)


def test_translate_truth_is_the_same_scene_with_one_attribute_replaced() -> None:
    data = AttributeShapes(size=32, length=10)  # with noise: the truth shares the input's noise
    image, meta = data.sample(2)
    flipped = 1 - meta.labels["object_color"]
    truth, truth_meta = data.translate_truth(2, "object_color", flipped)
    assert truth_meta.labels == {**meta.labels, "object_color": flipped}
    assert torch.equal(truth, data.sample(2, {"object_color": flipped})[0])
    outside = ~_dilate(meta.region(32))
    assert torch.equal(image[:, outside], truth[:, outside])
    assert not torch.equal(image, truth)


@pytest.mark.parametrize("size", [32, 64])
def test_region_area_matches_the_disc(size: int) -> None:
    data = AttributeShapes(size=size, length=10)
    for index in range(10):
        meta = data.meta(index)
        area = float(meta.region(size).sum())
        expected = math.pi * meta.radius**2
        assert abs(area - expected) <= 0.1 * expected, (area, expected)
        assert 0.2 * size <= meta.radius <= 0.32 * size


def test_random_labels_cover_all_combinations_and_colours_separate() -> None:
    data = AttributeShapes(size=16, length=200, noise=0.0)
    combos = set()
    for index in range(200):
        meta = data.meta(index)
        combos.add((meta.labels["object_color"], meta.labels["background"]))
        red, blue = meta.object_rgb[0], meta.object_rgb[2]
        if meta.labels["object_color"] == 0:
            assert red >= 0.7 and blue <= -0.5
        else:
            assert red <= -0.5 and blue >= 0.7
        assert all(-0.4 <= c <= 0.2 for c in meta.background_rgb)
    assert combos == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert data.describe()["attributes"] == {k: list(v) for k, v in ATTRIBUTES.items()}


def test_errors_name_the_known_values() -> None:
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        AttributeShapes(split="val")
    data = AttributeShapes(size=16, length=4)
    with pytest.raises(ValueError, match="unknown attribute 'shape'.*object_color, background"):
        data.sample(0, {"shape": 1})
    bad_value = "unknown value 2 for attribute 'object_color'.*1 \\(blue\\)"
    with pytest.raises(ValueError, match=bad_value):
        data.sample(0, {"object_color": 2})
    with pytest.raises(ValueError, match="unknown value 'green'.*0 \\(red\\)"):
        data.translate_truth(0, "object_color", "green")
    with pytest.raises(ValueError, match="unknown attribute 'colour'"):
        data.translate_truth(0, "colour", 0)
    with pytest.raises(IndexError, match="out of range"):
        data.sample(4)
