"""What folder datasets do to each training image: the reference's --preprocess modes.

    resize_and_crop        resize to load x load, random size x size crop (the default)
    crop                   random size x size crop of the image at its own size
    scale_width            width to load, height in proportion (at least size), no crop
    scale_width_and_crop   scale_width, then a random size x size crop
    none                   the image at its own size, each side rounded to a multiple of 4

then a horizontal flip with p = 0.5 unless flip is off. `load` is --load-size, by default
286/256 of --size as the reference's 286 for 256. Modes without a crop keep each image's own
shape, so a batch of more than one image needs pictures of one shape. Pictures outside
training (held-out, test splits) are resized whole to size x size, as the reference's test
script does with its load size equal to its crop size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .batch import DataError
from .images import crop_flip, load_size, resize

PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
NONE_MULTIPLE = 4       # 'none' rounds each side to this, as the reference's make_power_2


@dataclass(frozen=True)
class Preprocess:
    mode: str = "resize_and_crop"
    size: int = 256               # the crop (--size)
    load: int | None = None       # --load-size; None -> load_size(size)
    flip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS:
            raise DataError(f"unknown --preprocess {self.mode!r}; known: {', '.join(PREPROCESS)}")
        if self.load is not None and self.mode in ("crop", "none"):
            raise DataError(f"--load-size does not apply to --preprocess {self.mode} (it keeps "
                            f"each image's own size); leave it out or use resize_and_crop")
        if self.crops and self.mode != "crop" and self.load_side < self.size:
            raise DataError(f"--load-size {self.load_side} is smaller than --size {self.size}: "
                            f"the {self.size}x{self.size} crop would not fit")

    @property
    def load_side(self) -> int:
        return self.load if self.load is not None else load_size(self.size)

    @property
    def crops(self) -> bool:
        return self.mode.endswith("crop")

    @property
    def is_default(self) -> bool:
        return self == Preprocess(size=self.size)

    def resize(self, img: Image.Image, name: object = "an image") -> Image.Image:
        """The image resized as the mode says, before any crop; DataError naming `name` when a
        crop would not fit."""
        w, h = img.size
        if self.mode == "resize_and_crop":
            return resize(img, self.load_side, self.load_side)
        if self.mode.startswith("scale_width"):
            side = self.load_side
            return resize(img, max(self.size, int(side * h / w)), side)
        if self.mode == "none":
            return resize(img, _multiple(h), _multiple(w))
        if min(w, h) < self.size:           # crop at the image's own size
            raise DataError(f"{name} is {w}x{h}, smaller than the {self.size}x{self.size} crop "
                            f"of --preprocess crop; use --preprocess resize_and_crop or "
                            f"scale_width_and_crop, or a smaller --size")
        return img.convert("RGB")

    def augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(3, H, W) uint8 -> cropped (modes with a crop) and maybe flipped, from `generator`.
        The flip's draw is made even with flip off, so both settings see the same crops."""
        return crop_flip(x, self.size if self.crops else None, True, generator, self.flip)


def stack(images: list[torch.Tensor], mode: str) -> torch.Tensor:
    """(N, C, H, W) of same-shape images; DataError saying what to do when shapes differ."""
    shapes = sorted({tuple(t.shape[-2:]) for t in images})
    if len(shapes) > 1:
        raise DataError(f"one batch holds pictures of different sizes {shapes} under "
                        f"--preprocess {mode}, which keeps each picture's own shape: use "
                        f"--batch-size 1, or a mode with a crop (resize_and_crop, crop, "
                        f"scale_width_and_crop)")
    return torch.stack(images)


def _multiple(side: int) -> int:
    return max(NONE_MULTIPLE, round(side / NONE_MULTIPLE) * NONE_MULTIPLE)


def refuse_preprocess(preprocess: Preprocess | None, spec: str) -> None:
    """DataError when data drawn at their training size (synthetic) are given other settings."""
    if preprocess is not None and not preprocess.is_default:
        raise DataError(f"{spec} is drawn at --size with no crop or flip; --preprocess, "
                        f"--load-size and --no-flip apply to image folders only")
