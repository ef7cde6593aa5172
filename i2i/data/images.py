"""Image files and preprocessing: listing, decoding, resizing, and the train-time crop and flip.

Pixels become tensors only through i2i.pixels: (3, H, W) float32 in [-1, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..pixels import from_uint8, image_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LOAD_SCALE = 286 / 256  # train-time resize before the random crop, as in the reference recipe


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
    side = load_size(size) if train else size
    resized = as_uint8(resize(img, side, side))  # (3, L, L)
    return from_uint8(crop_flip(resized, size, train, generator))


def resize(img: Image.Image, height: int, width: int) -> Image.Image:
    """RGB, bicubic-resized to height x width (returned as is when it already has that size)."""
    img = img.convert("RGB")
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.BICUBIC)


def as_uint8(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8: caches hold 8-bit pixels (a quarter of float32); np.array copies, so the
    tensor owns writable memory. i2i.pixels.from_uint8 turns it into a model tensor."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def crop_flip(
    x: torch.Tensor, size: int | None, train: bool, generator: torch.Generator | None,
    flip: bool = True,
) -> torch.Tensor:
    """(3, H, W) -> a random (3, size, size) crop (size None: the whole image), flipped
    horizontally with p = 0.5 unless `flip` is False. Draw order is fixed (x, y, flip; the
    flip is drawn even when not used) so paired calls agree and --no-flip sees the same crops."""
    if not train:
        return x
    h, w = x.shape[-2:]
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator)) if size else 0
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator)) if size else 0
    flipped = bool(torch.rand(1, generator=generator) < 0.5) and flip
    if size:
        x = x[:, top : top + size, left : left + size]
    return x.flip(-1) if flipped else x


def list_images(folder: Path, recursive: bool) -> list[Path]:
    """Sorted files with an image extension; hidden files and folders (".name") are ignored."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(folder).parts)
    return sorted(p for p in candidates
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not hidden(p))


def scan(
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


def held_out_images(paths: list[Path], height: int, width: int) -> torch.Tensor | None:
    """(M, 3, height, width) in [-1, 1] of the files that decode, each bicubic-resized whole
    (no crop); None when none does."""
    images = [image_tensor(resize(img, height, width)) for img in map(load_image, paths)
              if img is not None]
    return torch.stack(images) if images else None
