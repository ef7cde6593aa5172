"""The picture sets i2i-eval compares: folders, halves of aligned A|B pictures, translations.

A picture is (name, (3, H, W) uint8 tensor). Its name is the file's stem, which pairs a generated
picture with its target ("cat.png" with "cat.jpg"). Files that do not decode are skipped with a
warning naming them (i2i.data.images.load_image), as training skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.folders import aligned_half, check_aligned_width
from ..data.images import IMAGE_EXTENSIONS, as_uint8, list_images, load_image

Picture = tuple[str, torch.Tensor]          # (name, (3, H, W) uint8)
A, B = 0, 1                                 # the halves of an aligned picture


class PictureError(ValueError):
    """A folder or picture i2i-eval cannot use."""


def image_files(folder: Path) -> list[Path]:
    """The picture files directly inside `folder`, sorted; an error when there are none or two
    share a name (they could not be paired by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PictureError(f"folder {folder} does not exist" if not folder.exists()
                           else f"{folder} is not a folder")
    files = list_images(folder, recursive=False)
    if not files:
        raise PictureError(f"no pictures in {folder}: expected files ending in "
                           f"{', '.join(IMAGE_EXTENSIONS)}")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise PictureError(f"{seen[path.stem].name} and {path.name} in {folder} share the "
                               "name pictures are paired by; rename or remove one")
        seen[path.stem] = path
    return files


def _decoded(path: Path, half: int | None) -> Image.Image | None:
    """The RGB picture at `path`, or the `half` of an A|B picture; None (warned) when it does
    not decode."""
    img = load_image(path)
    if img is None or half is None:
        return img
    reason = check_aligned_width(img)
    if reason:
        raise PictureError(f"{path}: {reason}; --aligned takes A|B pictures side by side")
    return aligned_half(img, half)


@dataclass(frozen=True)
class PictureFiles:
    """Pictures from files (or one half of each, for aligned A|B pictures), by name."""

    files: tuple[Path, ...]
    half: int | None = None

    @classmethod
    def of(cls, folder: Path, half: int | None = None) -> PictureFiles:
        return cls(tuple(image_files(folder)), half)

    def __len__(self) -> int:
        return len(self.files)

    def names(self) -> dict[str, Path]:
        return {p.stem: p for p in self.files}

    def load(self, path: Path) -> torch.Tensor | None:
        img = _decoded(path, self.half)
        return None if img is None else as_uint8(img)

    def __iter__(self) -> Iterator[Picture]:
        for path in self.files:
            picture = self.load(path)
            if picture is not None:
                yield path.stem, picture


@dataclass(frozen=True)
class Translated:
    """The translations of pictures by an opened model (i2i.api.Model), each at its own size,
    rounded to 8 bits as a written PNG would be; `chunk` pictures share one batcher run."""

    model: object
    source: PictureFiles
    chunk: int = 32

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Picture]:
        files = self.source.files
        for start in range(0, len(files), self.chunk):
            decoded = [(p.stem, _decoded(p, self.source.half)) for p in files[start:start +
                                                                             self.chunk]]
            decoded = [(name, img) for name, img in decoded if img is not None]
            if not decoded:
                continue
            outputs = self.model.translate([img for _, img in decoded])
            for (name, _), out in zip(decoded, outputs, strict=True):
                yield name, as_uint8(out)
