"""The shared rules: atomic writes (all or nothing) and the one pixel <-> tensor mapping."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from i2i import pixels
from i2i.atomic import atomic_path, write_bytes, write_text


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "out.json"
    write_text(target, "old")
    write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "model.plan"
    write_bytes(target, b"good")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"good"
    assert sorted(os.listdir(tmp_path)) == ["model.plan"]


def test_pixels_round_trip_exactly_and_clamp():
    grid = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([grid, grid[::-1], grid.T], axis=-1)                 # every value once
    t = pixels.image_tensor(Image.fromarray(rgb))
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min() == -1 and t.max() == 1
    assert np.array_equal(pixels.image_array(t), rgb)
    assert np.array_equal(np.asarray(pixels.to_image(t)), rgb)
    assert pixels.to_uint8(torch.tensor([[[-3.0, 3.0]]])).tolist() == [[[0, 255]]]
    with pytest.raises(ValueError, match=r"one \(3, H, W\) image"):
        pixels.to_image(t[None])


def test_masks_are_grey_over_255_and_back():
    grey = np.array([[0, 51, 255]], np.uint8)
    m = pixels.mask_tensor(Image.fromarray(grey))
    assert m.shape == (1, 1, 3) and torch.allclose(m, torch.tensor([[[0.0, 0.2, 1.0]]]))
    assert np.array_equal(pixels.mask_array(m), grey)
    assert pixels.mask_array(torch.tensor([[[-1.0, 2.0]]])).tolist() == [[0, 255]]
