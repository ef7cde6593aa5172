"""Image folders in the layouts users already have, following the batch protocol.

CycleGAN's root/trainA, root/trainB (testA/testB) hold unpaired domains; pix2pix's
root/{train,val,test}/ holds A|B side by side (A = left half, split at w // 2). Training images
go through a Preprocess (i2i.data.preprocess: --preprocess, --load-size, --no-flip); decoded,
resized images are cached as uint8 up to a byte budget per dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from ..pixels import from_uint8
from .batch import PAIR, STREAM_A, STREAM_B, DataError, aug_generator, batch_indices
from .images import (
    IMAGE_EXTENSIONS,
    as_uint8,
    held_out_images,
    list_images,
    load_image,
    resize,
    scan,
)
from .preprocess import Preprocess, stack

CACHE_BYTES = 1 << 30  # decoded, resized images kept in memory per dataset
_UNALIGNED_LAYOUT = "the CycleGAN layout root/{s}A, root/{s}B (split 'test' reads testA, testB)"
_ALIGNED_LAYOUT = "the pix2pix layout root/{s}/*.jpg with A|B side by side (A = left half)"


class _Cache:
    """Decoded, resized (3, H, W) uint8 tensors by key, up to a byte budget; then no more adds."""

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
        self.paths: list[Path] = list_images(self.root, recursive=False)
        if not self.paths:
            raise DataError(
                f"no images in {self.root}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
            )

    def __len__(self) -> int:
        return len(self.paths)


class FolderData:
    """The settings both folder layouts share: root, size, split, preprocessing and cache."""

    labelled = False

    def __init__(self, root: Path | str, size: int, split: str, cache_bytes: int,
                 preprocess: Preprocess | None) -> None:
        self.root, self.size = _check_root(root), int(size)
        self.split = _check_split(split, size)
        self.train = split == "train"
        self.pre = preprocess or Preprocess(size=self.size)
        if self.pre.size != self.size:
            raise ValueError(f"preprocess crops to {self.pre.size}, the dataset's size is {size}")
        self._cache = _Cache(cache_bytes)

    @classmethod
    def open(cls, spec: str, size: int, paired: bool, split: str, seed: int,
             preprocess: Preprocess | None = None) -> FolderData:
        """The dataset of the folder `spec`; folder data have no seed of their own."""
        return cls(spec, size, split, preprocess=preprocess)

    def _prepare(self, img: Image.Image, name: object) -> torch.Tensor:
        """(3, H, W) uint8 before augmentation: resized per the preprocessing in training,
        whole to size x size otherwise."""
        if self.train:
            return as_uint8(self.pre.resize(img, name))
        return as_uint8(resize(img, self.size, self.size))

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return from_uint8(self.pre.augment(x, generator) if self.train else x)

    def _describe(self) -> dict:
        about = {"kind": self.kind, "root": str(self.root), "size": self.size,
                 "split": self.split}
        if not self.pre.is_default:
            about["preprocess"] = {"mode": self.pre.mode, "load_size": self.pre.load,
                                   "flip": self.pre.flip}
        return about

    @staticmethod
    def held_out(description: dict, size: tuple[int, int], count: int, domain: str = "A"
                 ) -> tuple[torch.Tensor | None, None]:
        """(up to `count` images (M, 3, H, W) of `domain` (A or B), whole and resized; None),
        or (None, None) when the data holds none: root/test<domain>, else root/train<domain>;
        for the aligned layout that half of root/test, root/val, else root/train."""
        root = Path(str(description.get("root", "")))
        if not description.get("root"):
            return None, None
        aligned = description.get("kind") == AlignedFolder.kind
        half = "AB".index(domain)
        for split in ("test", "val", "train") if aligned else ("test", "train"):
            folder = root / split if aligned else root / f"{split}{domain}"
            paths = list_images(folder, recursive=False)[:count] if folder.is_dir() else []
            images = (_halves(paths, half, size) if aligned
                      else held_out_images(paths, *size))
            if images is not None:
                return images, None
        return None, None


class UnalignedFolders(FolderData):
    """CycleGAN layout: root/{split}A and root/{split}B, unpaired; B is drawn independently."""

    kind = "unaligned"
    paired = False

    def __init__(
        self, root: Path | str, size: int, split: str = "train", *, cache_bytes: int = CACHE_BYTES,
        preprocess: Preprocess | None = None,
    ) -> None:
        super().__init__(root, size, split, cache_bytes, preprocess)
        self.paths_a = self._scan_folder("A")
        self.paths_b = self._scan_folder("B")

    def __len__(self) -> int:
        """Images in A: the length of one epoch of the batch order."""
        return len(self.paths_a)

    def describe(self) -> dict:
        return {**self._describe(), "count_a": len(self.paths_a), "count_b": len(self.paths_b)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": (batch_size, 3, S, S)} float32 in [-1, 1]."""
        return {
            "A": self._domain_batch(self.paths_a, STREAM_A, step, batch_size, seed),
            "B": self._domain_batch(self.paths_b, STREAM_B, step, batch_size, seed),
        }

    def _domain_batch(
        self, paths: list[Path], stream: int, step: int, batch_size: int, seed: int
    ) -> torch.Tensor:
        """(batch_size, 3, S, S): B has its own order and its own crops, as in the reference."""
        images = []
        for pos, index in enumerate(batch_indices(len(paths), step, batch_size, seed, stream)):
            generator = aug_generator(seed, step, pos, stream) if self.train else None
            path = paths[index]
            x = self._cache.get((path, self.train),
                                lambda p=path: self._prepare(_reload(p), p))  # (3, H, W) uint8
            images.append(self._augment(x, generator))
        return stack(images, self.pre.mode)

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
        paths = []
        for path, img in scan(list_images(folder, recursive=True)):
            paths.append(path)
            self._cache.offer((path, self.train), lambda p=path, im=img: self._prepare(im, p))
        if not paths:
            raise DataError(f"no usable images in {folder}: expected {layout}")
        return paths


class AlignedFolder(FolderData):
    """pix2pix layout: root/{split}/* with A|B side by side; A is the left half (w // 2)."""

    kind = "aligned"
    paired = True

    def __init__(
        self, root: Path | str, size: int, split: str = "train", *, cache_bytes: int = CACHE_BYTES,
        preprocess: Preprocess | None = None,
    ) -> None:
        super().__init__(root, size, split, cache_bytes, preprocess)
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
        for path, img in scan(list_images(folder, recursive=True), check_aligned_width):
            self.paths.append(path)
            for half in (0, 1):
                self._cache.offer((path, half),
                                  lambda h=half, im=img, p=path: self._halve(im, h, p))
        if not self.paths:
            raise DataError(f"no usable images in {folder}: expected {layout}")

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        return {**self._describe(), "count": len(self.paths)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": ...}; A[i] and B[i] share one crop and flip."""
        images: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
        indices = batch_indices(len(self.paths), step, batch_size, seed, STREAM_A)
        for pos, index in enumerate(indices):
            path = self.paths[index]
            for half, domain in enumerate(("A", "B")):
                # Same seed for both halves: identical draws, so the pair stays aligned.
                generator = aug_generator(seed, step, pos, PAIR) if self.train else None
                x = self._cache.get(
                    (path, half), lambda p=path, h=half: self._halve(_reload(p), h, p)
                )  # (3, H, W) uint8
                images[domain].append(self._augment(x, generator))
        return {domain: stack(xs, self.pre.mode) for domain, xs in images.items()}

    def _halve(self, img: Image.Image, half: int, name: object) -> torch.Tensor:
        """(3, H, W) uint8 of the left (half=0, A) or right (half=1, B) half, prepared."""
        return self._prepare(aligned_half(img, half), f"the {'AB'[half]} half of {name}")


def _halves(paths: list[Path], half: int, size: tuple[int, int]) -> torch.Tensor | None:
    """(M, 3, H, W) of the left (0) or right (1) halves of the files that decode and split."""
    images = [img for img in map(load_image, paths)
              if img is not None and check_aligned_width(img) is None]
    halves = [aligned_half(img, half) for img in images]
    return torch.stack([from_uint8(as_uint8(resize(h, *size))) for h in halves]) \
        if halves else None


def aligned_half(img: Image.Image, half: int) -> Image.Image:
    """The left (half=0, A) or right (half=1, B) half of an A|B picture, split at w // 2."""
    w, h = img.size
    return img.crop((0, 0, w // 2, h) if half == 0 else (w // 2, 0, w, h))


def check_aligned_width(img: Image.Image) -> str | None:
    w = img.size[0]
    if w < 2 or w % 2:
        return f"width {w} cannot be split into equal A|B halves (need an even width >= 2)"
    return None
