"""Training data: image I/O, preprocessing, folder datasets and the batch protocol.

Every dataset here answers `batch(step, batch_size, seed)` as a pure function of its arguments
and the data on disk, so a resumed run sees exactly the batches it would have seen. The order is
epoch-based: in epoch e the images are visited in `torch.randperm(n)` order under a generator
seeded from (seed, stream, e); batch `step` takes positions step * batch_size ... onwards,
wrapping into the next epoch. Crop and flip come from a generator seeded from (seed, step,
position in batch), shared by A and B of a pair.

Layouts are those users already have: CycleGAN's root/trainA, root/trainB (testA/testB), and
pix2pix's root/{train,val,test}/ with A|B side by side (A = left half, split at w // 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..synthetic import TASKS, SyntheticShapes, stable_seed
from ..synthetic_attributes import ATTRIBUTES, AttributeShapes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LOAD_SCALE = 286 / 256  # train-time resize before the random crop, as in the reference recipe
CACHE_BYTES = 1 << 30  # decoded, resized images kept in memory per dataset
SYNTHETIC_PREFIX = "synthetic:"
ATTRIBUTES_TASK = "attributes"  # synthetic:attributes[:name,...]: labelled two-attribute scenes

# Streams mixed into seeds so A order, B order and augmentation never share random numbers.
_STREAM_A, _STREAM_B, _STREAM_AUG = 0, 1, 2
_PAIR = 2  # augmentation "domain" shared by A and B of a pair
_UNALIGNED_LAYOUT = "the CycleGAN layout root/{s}A, root/{s}B (split 'test' reads testA, testB)"
_ALIGNED_LAYOUT = "the pix2pix layout root/{s}/*.jpg with A|B side by side (A = left half)"


class DataError(ValueError):
    """A data root or spec that cannot be used; the message says what was expected."""


class BatchData(Protocol):
    """What the training loop needs from any dataset."""

    paired: bool  # True when A[i] and B[i] correspond
    def describe(self) -> dict: ...
    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]: ...


def load_image(path: Path) -> Image.Image | None:
    """The RGB image at `path`, or None (with a warning naming the file) if it cannot be read."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise OSError("empty file (0 bytes)")
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not in the middle of training
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)
        return None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] from a PIL image (converted to RGB)."""
    return _to_float(_to_uint8(img))


def to_image(t: torch.Tensor) -> Image.Image:
    """uint8 RGB image from a (3, H, W) tensor in [-1, 1]: (x + 1) / 2 * 255, rounded, clipped."""
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"to_image expects one (3, H, W) image, got shape {tuple(t.shape)}; "
                         "index a batch first (to_image(batch[i]))")
    x = ((t.detach().float().cpu() + 1.0) / 2.0 * 255.0).round().clamp(0, 255)
    return Image.fromarray(x.to(torch.uint8).permute(1, 2, 0).numpy(), mode="RGB")


def load_size(size: int) -> int:
    """Train-time resize target before cropping to `size` (286 for 256)."""
    return round(size * LOAD_SCALE)


def preprocess(
    img: Image.Image, size: int, train: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """(3, size, size) float32 in [-1, 1].

    train: bicubic resize to load_size(size), random size x size crop, horizontal flip with
    p = 0.5, all drawn from `generator` (None falls back to torch's global RNG).
    Not train: bicubic resize to size x size, no randomness.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    resized = _to_uint8(_resize(img, load_size(size) if train else size))  # (3, L, L)
    return _to_float(_crop_flip(resized, size, train, generator))


def _resize(img: Image.Image, side: int) -> Image.Image:
    img = img.convert("RGB")
    if img.size == (side, side):
        return img
    return img.resize((side, side), Image.Resampling.BICUBIC)


def _to_uint8(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8; np.array copies, so the tensor owns writable memory."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 in [-1, 1]; contiguous, since crops and flips are views."""
    return (x.float() / 127.5 - 1.0).contiguous()


def _crop_flip(
    x: torch.Tensor, size: int, train: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """(3, L, L) -> (3, size, size). Draw order is fixed (x, y, flip) so paired calls agree."""
    if not train:
        return x
    slack = x.shape[-1] - size + 1  # number of valid crop offsets per axis
    left = int(torch.randint(0, slack, (1,), generator=generator))
    top = int(torch.randint(0, slack, (1,), generator=generator))
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    x = x[:, top : top + size, left : left + size]
    return x.flip(-1) if flip else x


@lru_cache(maxsize=16)
def _epoch_order(n: int, seed: int, stream: int, epoch: int) -> torch.Tensor:
    """(n,) int64: the visiting order of epoch `epoch`; cached because batches reuse it."""
    generator = torch.Generator().manual_seed(stable_seed(seed, stream, epoch))
    return torch.randperm(n, generator=generator)


def batch_indices(n: int, step: int, batch_size: int, seed: int, stream: int) -> list[int]:
    """Dataset indices for batch `step`: positions step*batch_size ... of the epoch sequence."""
    if n < 1:
        raise ValueError("cannot draw batches from an empty dataset")
    if step < 0 or batch_size < 1:
        raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        out.append(int(_epoch_order(n, seed, stream, epoch)[pos]))
    return out


def _aug_generator(seed: int, step: int, position: int, domain: int) -> torch.Generator:
    return torch.Generator().manual_seed(stable_seed(seed, _STREAM_AUG, step, position, domain))


def _list_images(folder: Path, recursive: bool) -> list[Path]:
    """Sorted files with an image extension; hidden files and folders (".name") are ignored."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(folder).parts)
    return sorted(p for p in candidates
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not hidden(p))


def _scan(
    paths: list[Path], check: Callable[[Image.Image], str | None] | None = None
) -> Iterator[tuple[Path, Image.Image]]:
    """Yield (path, image) for files that decode and pass `check` (which returns a reason)."""
    for path in paths:
        img = load_image(path)
        reason = None if img is None or check is None else check(img)
        if reason is not None:
            warnings.warn(f"skipping unusable image {path}: {reason}", stacklevel=3)
        elif img is not None:
            yield path, img


class _Cache:
    """Decoded, resized (3, L, L) uint8 tensors by key, up to a byte budget; then no more adds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self.items: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self.items:
            return self.items[key]
        value = make()
        if self.used + value.numel() <= self.max_bytes:
            self.items[key] = value
            self.used += value.numel()
        return value

    def offer(self, key: tuple, make: Callable[[], torch.Tensor]) -> None:
        """Fill the cache while scanning, skipping the resize once the budget is spent."""
        if self.used < self.max_bytes:
            self.get(key, make)


def _check_root(root: Path | str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    return root


def _check_split(split: str, size: int) -> str:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise DataError(f"split must be a folder name such as 'train' or 'test', got {split!r}")
    return split


def _reload(path: Path) -> Image.Image:
    img = load_image(path)
    if img is None:
        raise DataError(f"image {path} was readable when the dataset was scanned but not now")
    return img


class ImageFolder:
    """The images directly inside one folder (not recursive), sorted by name; for inference."""

    def __init__(self, root: Path | str) -> None:
        self.root = _check_root(root)
        self.paths: list[Path] = _list_images(self.root, recursive=False)
        if not self.paths:
            raise DataError(
                f"no images in {self.root}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
            )

    def __len__(self) -> int:
        return len(self.paths)


def _init_folder_data(data, root: Path | str, size: int, split: str, cache_bytes: int) -> None:
    """The settings both folder layouts share: root, size, split, resize target and cache."""
    data.root, data.size, data.split = _check_root(root), int(size), _check_split(split, size)
    data.train = split == "train"
    data._side = load_size(data.size) if data.train else data.size  # resize target L
    data._cache = _Cache(cache_bytes)


class UnalignedFolders:
    """CycleGAN layout: root/{split}A and root/{split}B, unpaired; B is drawn independently."""

    paired = False

    def __init__(
        self, root: Path | str, size: int, split: str = "train", *, cache_bytes: int = CACHE_BYTES
    ) -> None:
        _init_folder_data(self, root, size, split, cache_bytes)
        self.paths_a = self._scan_folder("A")
        self.paths_b = self._scan_folder("B")

    def __len__(self) -> int:
        """Images in A: the length of one epoch of the batch order."""
        return len(self.paths_a)

    def describe(self) -> dict:
        return {"kind": "unaligned", "root": str(self.root), "size": self.size,
                "split": self.split, "count_a": len(self.paths_a), "count_b": len(self.paths_b)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": (batch_size, 3, S, S)} float32 in [-1, 1]."""
        return {
            "A": self._domain_batch(self.paths_a, _STREAM_A, step, batch_size, seed),
            "B": self._domain_batch(self.paths_b, _STREAM_B, step, batch_size, seed),
        }

    def _domain_batch(
        self, paths: list[Path], stream: int, step: int, batch_size: int, seed: int
    ) -> torch.Tensor:
        """(batch_size, 3, S, S): B has its own order and its own crops, as in the reference."""
        images = []
        for pos, index in enumerate(batch_indices(len(paths), step, batch_size, seed, stream)):
            generator = _aug_generator(seed, step, pos, stream) if self.train else None
            x = self._load(paths[index])  # (3, L, L) uint8
            images.append(_to_float(_crop_flip(x, self.size, self.train, generator)))
        return torch.stack(images)

    def _load(self, path: Path) -> torch.Tensor:
        side = self._side
        return self._cache.get((path, side), lambda: _to_uint8(_resize(_reload(path), side)))

    def _scan_folder(self, domain: str) -> list[Path]:
        folder = self.root / f"{self.split}{domain}"
        layout = _UNALIGNED_LAYOUT.format(s=self.split)
        if not folder.is_dir():
            if (self.root / self.split).is_dir():
                raise DataError(
                    f"{self.root} looks like an aligned (pix2pix) layout ({self.root / self.split}"
                    f" exists, {folder.name} does not); this model needs unpaired data in {layout}"
                )
            raise DataError(f"missing folder {folder}: expected {layout}")
        side, paths = self._side, []
        for path, img in _scan(_list_images(folder, recursive=True)):
            paths.append(path)
            self._cache.offer((path, side), lambda img=img: _to_uint8(_resize(img, side)))
        if not paths:
            raise DataError(f"no usable images in {folder}: expected {layout}")
        return paths


class AlignedFolder:
    """pix2pix layout: root/{split}/* with A|B side by side; A is the left half (w // 2)."""

    paired = True

    def __init__(
        self, root: Path | str, size: int, split: str = "train", *, cache_bytes: int = CACHE_BYTES
    ) -> None:
        _init_folder_data(self, root, size, split, cache_bytes)
        folder = self.root / split
        layout = _ALIGNED_LAYOUT.format(s=split)
        if not folder.is_dir():
            if (self.root / f"{split}A").is_dir() or (self.root / f"{split}B").is_dir():
                raise DataError(
                    f"{self.root} looks like an unaligned (CycleGAN) layout; this model needs "
                    f"paired data in root/{split}/ with A|B side by side"
                )
            raise DataError(f"missing folder {folder}: expected {layout}")
        self.paths: list[Path] = []
        for path, img in _scan(_list_images(folder, recursive=True), _check_aligned_width):
            self.paths.append(path)
            for half in (0, 1):
                self._cache.offer(self._key(path, half), lambda h=half, im=img: self._halve(im, h))
        if not self.paths:
            raise DataError(f"no usable images in {folder}: expected {layout}")

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        return {"kind": "aligned", "root": str(self.root), "size": self.size,
                "split": self.split, "count": len(self.paths)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": ...}; A[i] and B[i] share one crop and flip."""
        images: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
        indices = batch_indices(len(self.paths), step, batch_size, seed, _STREAM_A)
        for pos, index in enumerate(indices):
            path = self.paths[index]
            for half, domain in enumerate(("A", "B")):
                # Same seed for both halves: identical draws, so the pair stays aligned.
                generator = _aug_generator(seed, step, pos, _PAIR) if self.train else None
                x = self._cache.get(
                    self._key(path, half), lambda p=path, h=half: self._halve(_reload(p), h)
                )  # (3, L, L) uint8
                images[domain].append(_to_float(_crop_flip(x, self.size, self.train, generator)))
        return {domain: torch.stack(xs) for domain, xs in images.items()}  # (B, 3, S, S) each

    def _key(self, path: Path, half: int) -> tuple:
        return (path, half, self._side)

    def _halve(self, img: Image.Image, half: int) -> torch.Tensor:
        """(3, L, L) uint8 of the left (half=0, A) or right (half=1, B) half, resized."""
        w, h = img.size
        box = (0, 0, w // 2, h) if half == 0 else (w // 2, 0, w, h)
        return _to_uint8(_resize(img.crop(box), self._side))


def _check_aligned_width(img: Image.Image) -> str | None:
    w = img.size[0]
    if w < 2 or w % 2:
        return f"width {w} cannot be split into equal A|B halves (need an even width >= 2)"
    return None


class SyntheticData:
    """The batch protocol over SyntheticShapes; no crop or flip (positions are already random)."""

    def __init__(self, task: str, size: int, paired: bool, seed: int = 0, split: str = "train",
                 length: int = 1000, noise: float = 0.04) -> None:
        try:
            self.shapes = SyntheticShapes(task, size, split, paired, seed, length, noise)
        except ValueError as exc:  # unknown task or split, bad size: report it as a data error
            raise DataError(str(exc)) from exc
        self.paired = bool(paired)

    def __len__(self) -> int:
        return len(self.shapes)

    def describe(self) -> dict:
        return self.shapes.describe()

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": ...} float32 in [-1, 1]."""
        n = len(self.shapes)
        index_a = batch_indices(n, step, batch_size, seed, _STREAM_A)
        index_b = index_a if self.paired else batch_indices(n, step, batch_size, seed, _STREAM_B)
        return {
            "A": torch.stack([self.shapes.sample("A", i)[0] for i in index_a]),
            "B": torch.stack([self.shapes.sample("B", i)[0] for i in index_b]),
        }


class AttributeData:
    """Labelled pairs for exemplar models from the two-attribute scenes (i2i.synthetic_attributes).

    batch() gives {"A": inputs, "B": exemplars, "label_A", "label_B"}: inputs and exemplars are
    drawn independently (each attribute value is random per image), and the labels hold one
    column per attribute in `labels`, 0. or 1. (the index of the value name).
    """

    paired = False

    def __init__(self, size: int, labels: tuple[str, ...] = tuple(ATTRIBUTES), seed: int = 0,
                 split: str = "train", length: int = 1000, noise: float = 0.03) -> None:
        unknown = [name for name in labels if name not in ATTRIBUTES]
        if unknown or not labels or len(set(labels)) != len(labels):
            raise DataError(f"synthetic:{ATTRIBUTES_TASK} takes distinct attribute names from "
                            f"{', '.join(ATTRIBUTES)}; got {', '.join(labels) or 'none'}")
        try:
            self.scenes = AttributeShapes(size, split, seed, length, noise)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        self.labels = tuple(labels)

    def __len__(self) -> int:
        return len(self.scenes)

    def describe(self) -> dict:
        return {**self.scenes.describe(), "labels": list(self.labels)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        n = len(self.scenes)
        out = {}
        for key, stream in (("A", _STREAM_A), ("B", _STREAM_B)):
            images, labels = [], []
            for index in batch_indices(n, step, batch_size, seed, stream):
                image, meta = self.scenes.sample(index)
                images.append(image)
                labels.append([float(meta.labels[name]) for name in self.labels])
            out[key], out[f"label_{key}"] = torch.stack(images), torch.tensor(labels)
        return out


class DomainLabels:
    """Any unpaired A/B data as labelled pairs: A images are label 0, B images label 1."""

    paired = False
    labels = ("domain",)

    def __init__(self, data: BatchData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def describe(self) -> dict:
        return {**self.data.describe(), "labels": ["domain"]}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        out = self.data.batch(step, batch_size, seed)
        out["label_A"] = torch.zeros(out["A"].shape[0], 1)
        out["label_B"] = torch.ones(out["B"].shape[0], 1)
        return out


def _attribute_data(task: str, size: int, split: str, seed: int) -> AttributeData:
    """"attributes" -> every attribute as a label; "attributes:object_color" -> that one."""
    names = task.partition(":")[2]
    labels = tuple(names.split(",")) if names else tuple(ATTRIBUTES)
    return AttributeData(size, labels, seed=seed, split=split)


def open_data(spec: str, size: int, paired: bool, split: str = "train", seed: int = 0,
              labelled: bool = False) -> BatchData:
    """A dataset following the batch protocol, from "synthetic:<task>" or a folder path.

    Folders: paired=True reads the pix2pix layout (AlignedFolder), paired=False the CycleGAN
    layout (UnalignedFolders). `seed` seeds synthetic images; folder data ignore it.
    labelled=True (exemplar models) adds "label_A"/"label_B": the scenes' attributes for
    synthetic:attributes, otherwise the domain (A = 0, B = 1).
    """
    if spec.startswith(SYNTHETIC_PREFIX):
        task = spec[len(SYNTHETIC_PREFIX) :]
        if task == ATTRIBUTES_TASK or task.startswith(ATTRIBUTES_TASK + ":"):
            if not labelled:
                raise DataError(f"{spec} holds labelled scenes for exemplar models (lomit); "
                                f"use {SYNTHETIC_PREFIX}{next(iter(TASKS))} for this model")
            return _attribute_data(task, size, split, seed)
        if task not in TASKS:
            known = ", ".join([SYNTHETIC_PREFIX + t for t in TASKS]
                              + [f"{SYNTHETIC_PREFIX}{ATTRIBUTES_TASK}[:attribute,...]"])
            raise DataError(f"unknown synthetic data {spec!r}; known: {known}")
        data: BatchData = SyntheticData(task, size, paired, seed=seed, split=split)
    elif paired:
        data = AlignedFolder(spec, size, split)
    else:
        data = UnalignedFolders(spec, size, split)
    return DomainLabels(data) if labelled else data
