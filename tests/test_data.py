"""Tests for i2i.data: determinism, geometry, folders, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import DataError, open_data
from i2i.data.batch import batch_indices
from i2i.data.folders import AlignedFolder, ImageFolder, UnalignedFolders
from i2i.data.images import load_image, load_size, preprocess
from i2i.data.shapes import SyntheticShapes
from i2i.data.synthetic import SyntheticData
from i2i.pixels import image_tensor as to_tensor
from i2i.pixels import to_image

# Solid colours far apart, so a processed image can be identified by its mean colour.
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (255, 255, 255), (0, 0, 0)]


# ---------------------------------------------------------------------------------------------
# Synthetic shapes


def test_synthetic_is_deterministic_and_varies() -> None:
    make = lambda **kw: SyntheticShapes(size=32, **kw)
    a0, _ = make().sample("A", 0)
    assert torch.equal(a0, make().sample("A", 0)[0])  # same arguments, fresh object
    assert not torch.equal(a0, make().sample("A", 1)[0])  # other index
    assert not torch.equal(a0, make(split="test").sample("A", 0)[0])  # other split
    assert not torch.equal(a0, make(seed=1).sample("A", 0)[0])  # other seed
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    make().sample("B", 3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert np.array_equal(np_state, np.random.get_state()[1])


@pytest.mark.parametrize("size", [8, 32, 37, 64])
@pytest.mark.parametrize("task", ["circle2square", "square2circle"])
def test_synthetic_shape_range_and_margin(size: int, task: str) -> None:
    noisy = SyntheticShapes(task, size=size)
    clean = SyntheticShapes(task, size=size, noise=0.0)
    for domain in ("A", "B"):
        for index in range(5):
            x, meta = noisy.sample(domain, index)
            assert x.shape == (3, size, size) and x.dtype == torch.float32
            assert x.min() >= -1.0 and x.max() <= 1.0
            assert 0.18 * size <= meta.radius <= 0.32 * size
            # The soft edge never reaches the outer ring of pixels: it is pure background.
            y, _ = clean.sample(domain, index)
            bg = torch.tensor(meta.bg_color, dtype=torch.float32)[:, None]
            ring = torch.cat([y[:, 0], y[:, -1], y[:, :, 0], y[:, :, -1]], dim=1)  # (3, 4S)
            assert torch.allclose(ring, bg.expand_as(ring), atol=1e-6)
    assert noisy.meta("A", 0).shape == ("circle" if task == "circle2square" else "square")


def test_synthetic_colours_are_distinct() -> None:
    shapes = SyntheticShapes(size=16, length=300)
    for index in range(300):
        meta = shapes.meta("A", index)
        dist = math.dist(meta.fg_color, meta.bg_color)
        assert dist >= 0.8
        assert all(-1.0 <= c <= 1.0 for c in meta.fg_color + meta.bg_color)


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown synthetic task 'circle2star'.*circle2square"):
        SyntheticShapes("circle2star")
    with pytest.raises(ValueError, match="unknown split 'val'; known: train, test"):
        SyntheticShapes(split="val")
    with pytest.raises(ValueError, match="size >= 8"):
        SyntheticShapes(size=7)
    with pytest.raises(ValueError, match="unknown domain 'C'"):
        SyntheticShapes().sample("C", 0)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticShapes(length=4).sample("A", 4)


def test_paired_square_is_bounding_square_of_circle() -> None:
    size = 64
    shapes = SyntheticShapes("circle2square", size=size, paired=True, noise=0.0)
    corners_checked = 0
    for index in range(6):
        a, meta_a = shapes.sample("A", index)
        b, meta_b = shapes.sample("B", index)
        assert (meta_a.shape, meta_b.shape) == ("circle", "square")
        assert meta_a.center == meta_b.center and meta_a.radius == meta_b.radius
        assert meta_a.fg_color == meta_b.fg_color and meta_a.bg_color == meta_b.bg_color
        assert torch.equal(meta_a.bounding_square(size), meta_b.bounding_square(size))
        # Corners: well inside the bounding square, outside the circle's radius + 1.
        coords = torch.arange(size, dtype=torch.float64) + 0.5
        dx = (coords - meta_a.center[0])[None, :]
        dy = (coords - meta_a.center[1])[:, None]
        r = meta_a.radius
        corner = (torch.maximum(dx.abs(), dy.abs()) <= r - 1) & (dx.hypot(dy) >= r + 1)
        fg = torch.tensor(meta_a.fg_color, dtype=torch.float32)[:, None]
        bg = torch.tensor(meta_a.bg_color, dtype=torch.float32)[:, None]
        assert corner.sum() > 20
        assert torch.allclose(b[:, corner], fg.expand(3, int(corner.sum())), atol=1e-6)
        assert torch.allclose(a[:, corner], bg.expand(3, int(corner.sum())), atol=1e-6)
        corners_checked += 1
    assert corners_checked == 6
    # Unpaired sets draw A and B independently.
    unpaired = SyntheticShapes("circle2square", size=size, paired=False)
    assert unpaired.meta("A", 0).center != unpaired.meta("B", 0).center


@pytest.mark.parametrize("domain, shape", [("A", "circle"), ("B", "square")])
def test_shape_area_fraction(domain: str, shape: str) -> None:
    size = 64
    shapes = SyntheticShapes("circle2square", size=size, noise=0.0)
    for index in range(8):
        x, meta = shapes.sample(domain, index)
        fg = torch.tensor(meta.fg_color)[:, None, None]
        bg = torch.tensor(meta.bg_color)[:, None, None]
        closer_to_fg = ((x - fg).norm(dim=0) < (x - bg).norm(dim=0)).float().mean().item()
        r = meta.radius
        expected = (math.pi * r * r if shape == "circle" else (2 * r) ** 2) / size**2
        assert abs(closer_to_fg - expected) <= 0.1 * expected, (index, closer_to_fg, expected)


def test_synthetic_data_batches() -> None:
    data = open_data("synthetic:circle2square", 16, paired=True, seed=3)
    assert isinstance(data, SyntheticData) and data.paired
    assert data.describe()["kind"] == "synthetic" and data.describe()["seed"] == 3
    batch = data.batch(step=7, batch_size=4, seed=11)
    assert batch["A"].shape == batch["B"].shape == (4, 3, 16, 16)
    again = SyntheticData("circle2square", 16, paired=True, seed=3).batch(7, 4, 11)
    assert torch.equal(batch["A"], again["A"]) and torch.equal(batch["B"], again["B"])
    assert not torch.equal(batch["A"], data.batch(8, 4, 11)["A"])
    # Paired: B[i] is image i's partner, the same index as A[i].
    for pos, index in enumerate(batch_indices(1000, 7, 4, 11, stream=0)):
        assert torch.equal(batch["A"][pos], data.shapes.sample("A", index)[0])
        assert torch.equal(batch["B"][pos], data.shapes.sample("B", index)[0])


def test_batch_indices_cover_each_epoch() -> None:
    n, bs = 7, 3
    seq = [i for step in range(7) for i in batch_indices(n, step, bs, seed=5, stream=0)]
    assert len(seq) == 21
    for epoch in range(3):
        assert sorted(seq[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert seq[:n] != seq[n : 2 * n]  # a fresh order per epoch
    assert seq != [i for step in range(7) for i in batch_indices(n, step, bs, seed=6, stream=0)]


# ---------------------------------------------------------------------------------------------
# Image I/O and preprocessing


def test_image_round_trip(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img is not None and img.mode == "RGB"
    t = to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert t.min() >= -1.0 and t.max() <= 1.0
    assert np.array_equal(np.array(to_image(t)), pixels)
    with pytest.raises(ValueError, match=r"\(3, H, W\).*batch\[i\]"):
        to_image(t[None])


def test_preprocess_train_and_test() -> None:
    # A horizontal ramp: flips and crops both change the output.
    ramp = np.tile(np.linspace(0, 255, 40, dtype=np.uint8)[None, :, None], (30, 1, 3))
    img = Image.fromarray(ramp)
    assert load_size(256) == 286 and load_size(37) == 41
    test = preprocess(img, 37, train=False, generator=None)
    assert test.shape == (3, 37, 37) and test.min() >= -1 and test.max() <= 1
    assert torch.equal(test, preprocess(img, 37, train=False, generator=None))
    outs = [preprocess(img, 37, True, torch.Generator().manual_seed(s)) for s in range(16)]
    assert all(o.shape == (3, 37, 37) for o in outs)
    assert torch.equal(outs[0], preprocess(img, 37, True, torch.Generator().manual_seed(0)))
    flipped = [bool(o[0, :, 0].mean() > o[0, :, -1].mean()) for o in outs]
    assert any(flipped) and not all(flipped)
    assert len({o.sum().item() for o in outs}) > 4  # crops move


# ---------------------------------------------------------------------------------------------
# Folder datasets


def _solid(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _ramp(h: int = 24, w: int = 20) -> np.ndarray:
    """(h, w, 3) uint8 with a horizontal and a weaker vertical gradient: crops and flips show."""
    ramp = np.linspace(0, 255, w)[None, :] + np.linspace(0, 60, h)[:, None]
    return np.repeat(ramp.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _add_bad_files(folder: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("this is not a JPEG")
    (folder / "notes.txt").write_text("ignored: not an image extension")


def _nearest(x: torch.Tensor) -> int:
    """Index into PALETTE of the colour closest to the mean colour of (3, S, S) `x`."""
    mean = (x.mean(dim=(1, 2)) + 1) / 2 * 255
    return int(torch.tensor(PALETTE, dtype=torch.float32).sub(mean).norm(dim=1).argmin())


@pytest.fixture
def unaligned_root(tmp_path: Path) -> Path:
    for i in range(5):
        _solid(tmp_path / "trainA" / f"a{i}.{'png' if i % 2 else 'jpg'}", PALETTE[i])
    for i in range(7):
        _solid(tmp_path / "trainB" / f"b{i}.png", PALETTE[i])
    _solid(tmp_path / "testA" / "t.png", PALETTE[0])
    _solid(tmp_path / "testB" / "t.png", PALETTE[1])
    _add_bad_files(tmp_path / "trainA")
    return tmp_path


def test_unaligned_skips_bad_files_with_warnings(unaligned_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*trainA") as rec:
        data = UnalignedFolders(unaligned_root, size=16)
    messages = [str(w.message) for w in rec]
    assert len(messages) == 3, messages
    for name in ("truncated.png", "empty.png: empty file", "fake.jpg"):
        assert any(name in m for m in messages), (name, messages)
    assert [p.name for p in data.paths_a] == [f"a{i}.{'png' if i % 2 else 'jpg'}" for i in range(5)]
    assert data.describe() == {"kind": "unaligned", "root": str(unaligned_root), "size": 16,
                               "split": "train", "count_a": 5, "count_b": 7}
    assert not data.paired


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_unaligned_batches(unaligned_root: Path) -> None:
    data = UnalignedFolders(unaligned_root, size=16)
    batch = data.batch(step=0, batch_size=3, seed=0)
    assert batch["A"].shape == batch["B"].shape == (3, 3, 16, 16)
    assert batch["A"].dtype == torch.float32
    assert batch["A"].min() >= -1 and batch["A"].max() <= 1
    again = data.batch(step=0, batch_size=3, seed=0)
    assert torch.equal(batch["A"], again["A"]) and torch.equal(batch["B"], again["B"])
    assert not torch.equal(batch["A"], data.batch(step=1, batch_size=3, seed=0)["A"])
    uncached = UnalignedFolders(unaligned_root, size=16, cache_bytes=0).batch(0, 3, seed=0)
    assert torch.equal(batch["A"], uncached["A"]) and torch.equal(batch["B"], uncached["B"])
    # Two epochs of A, batch size 2 over 5 images: every image exactly once per epoch.
    seen_a = [_nearest(x) for step in range(5) for x in data.batch(step, 2, seed=4)["A"]]
    assert sorted(seen_a[:5]) == sorted(seen_a[5:]) == list(range(5))
    # B follows its own length (7 images) and order.
    seen_b = [_nearest(x) for step in range(7) for x in data.batch(step, 2, seed=4)["B"]]
    assert sorted(seen_b[:7]) == list(range(7))
    test = UnalignedFolders(unaligned_root, size=16, split="test").batch(0, 2, 0)
    assert [_nearest(x) for x in test["A"]] == [0, 0] and [_nearest(x) for x in test["B"]] == [1, 1]


def test_unaligned_augmentation_varies_per_step_and_domain(tmp_path: Path) -> None:
    _save(tmp_path / "trainA" / "r.png", _ramp())
    _save(tmp_path / "trainB" / "r.png", _ramp())
    data = UnalignedFolders(tmp_path, size=16)
    outs = [data.batch(step, 1, seed=0) for step in range(8)]
    assert len({o["A"].sum().item() for o in outs}) > 2  # crop/flip change with the step
    assert any(not torch.equal(o["A"], o["B"]) for o in outs)  # A and B crop independently
    fresh = UnalignedFolders(tmp_path, size=16)  # a resumed run rebuilds the dataset
    assert torch.equal(fresh.batch(3, 1, seed=0)["A"], outs[3]["A"])


def test_aligned_halves(tmp_path: Path) -> None:
    pair = np.zeros((24, 40, 3), dtype=np.uint8)
    pair[:, :20, 0] = 255  # A (left half) red
    pair[:, 20:, 2] = 255  # B (right half) blue
    for i in range(3):
        _save(tmp_path / "train" / f"{i}.jpg", pair)
    _solid(tmp_path / "train" / "odd.png", (0, 0, 0), size=(21, 24))
    with pytest.warns(UserWarning, match=r"odd\.png: width 21"):
        data = AlignedFolder(tmp_path, size=16)
    assert data.paired and data.describe()["count"] == 3
    batch = data.batch(step=2, batch_size=4, seed=1)
    a, b = batch["A"], batch["B"]
    assert a.shape == b.shape == (4, 3, 16, 16)
    assert a[:, 0].mean() > 0.9 and a[:, 2].mean() < -0.9  # red
    assert b[:, 2].mean() > 0.9 and b[:, 0].mean() < -0.9  # blue


def test_aligned_pairs_share_crop_and_flip(tmp_path: Path) -> None:
    # Both halves hold the same 2-D ramp: A and B agree only if they share crop and flip.
    half = _ramp()
    _save(tmp_path / "train" / "r.png", np.concatenate([half, half], axis=1))
    data = AlignedFolder(tmp_path, size=16)
    outs = [data.batch(step, 2, seed=0) for step in range(6)]
    assert all(torch.equal(o["A"], o["B"]) for o in outs)
    uncached = AlignedFolder(tmp_path, size=16, cache_bytes=0).batch(5, 2, seed=0)
    assert torch.equal(uncached["A"], outs[5]["A"]) and torch.equal(uncached["B"], outs[5]["B"])
    assert len({o["A"].sum().item() for o in outs}) > 2  # augmentation did vary


def test_image_folder(tmp_path: Path) -> None:
    _solid(tmp_path / "b.png", PALETTE[0])
    _solid(tmp_path / "a.JPG", PALETTE[1])
    _solid(tmp_path / "nested" / "c.png", PALETTE[2])
    (tmp_path / "readme.md").write_text("x")
    assert [p.name for p in ImageFolder(tmp_path).paths] == ["a.JPG", "b.png"]


# ---------------------------------------------------------------------------------------------
# Errors users will meet


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist"):
        open_data(str(tmp_path / "nowhere"), 16, paired=False)
    with pytest.raises(DataError, match=r"no images in .*expected files ending in \.png"):
        ImageFolder(tmp_path)
    with pytest.raises(DataError, match=r"unknown synthetic data 'synthetic:circle2star'; "
                                        r"known: synthetic:circle2square, synthetic:square2circle"):
        open_data("synthetic:circle2star", 16, paired=False)
    with pytest.raises(DataError, match=r"missing folder .*trainA: expected the CycleGAN layout"):
        open_data(str(tmp_path), 16, paired=False)
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("x")
    _solid(tmp_path / "trainB" / "b.png", PALETTE[0])
    with pytest.raises(DataError, match=r"no usable images in .*trainA: expected the CycleGAN"):
        open_data(str(tmp_path), 16, paired=False)
    with pytest.raises(DataError, match=r"looks like an unaligned \(CycleGAN\) layout; this model "
                                        r"needs paired data in root/train/ with A\|B side by side"):
        open_data(str(tmp_path), 16, paired=True)


def test_errors_aligned(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"looks like an aligned \(pix2pix\) layout"):
        open_data(str(tmp_path), 16, paired=False)
    _add_bad_files(tmp_path / "train")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        with pytest.raises(DataError, match=r"no usable images in .*train: expected the pix2pix"):
            open_data(str(tmp_path), 16, paired=True)
    with pytest.raises(DataError, match="missing folder .*test: expected the pix2pix layout"):
        open_data(str(tmp_path), 16, paired=True, split="test")
    with pytest.raises(DataError, match="unknown split 'val'"):
        open_data("synthetic:circle2square", 16, paired=True, split="val")
