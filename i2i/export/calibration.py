"""Calibration images for int8: the model's own domain, where the int8 graph's activation
scales are measured.

Three sources, in the order i2i-export tries them:

    --calibration DIR              the pictures of a folder (each resized whole to the export size)
    --calibration synthetic:TASK   the test split of a synthetic task (synthetic:circle2square)
    (neither)                      the test split of the data the checkpoint was trained on
                                   (meta.data), in the domain the generator translates from

The first images of every source are held out of calibration: from the checkpoint's own data
they are the parity gate's domain batch, and from another source they become it where the
checkpoint records no data of its own; calibrating on the very images that judge the result
would flatter it. Calibration batches hold one row each, so the calibrator sees every image at
full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import domain_samples
from ..data.batch import DataError
from ..data.images import held_out_images, list_images
from ..data.open import SYNTHETIC_PREFIX, data_kind
from ..models.spec import ModelSpec
from .parity import MASK_SCHEMES, pool_inputs, scheme_masked

DEFAULT_COUNT = 32


class CalibrationError(ValueError):
    """No calibration images could be found: says where they were looked for and what to pass."""


@dataclass
class Calibration:
    """Images of the domain, and where they came from (recorded in the manifest)."""

    images: torch.Tensor                # (M, 3, H, W) in [-1, 1]
    regions: torch.Tensor | None        # (M, 1, H, W) true object regions, where the data knows
    source: str                         # "DIR", "synthetic:TASK" or "checkpoint data (...)"
    held_out: torch.Tensor              # (K, 3, H, W): the leading images, for the parity gate

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.images),
                "held_out_for_parity": len(self.held_out)}

    def batches(self, spec: ModelSpec, size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """One single-row batch per image for signature `spec`: its other image inputs take the
        next images, a mask input the true region or, where none is known, the masks of the
        parity gate's first scheme (rects); knobs seeded uniform values."""
        out = []
        for i in range(len(self.images)):
            order = torch.roll(torch.arange(len(self.images)), -i)
            regions = self.regions[order] if self.regions is not None else None
            batch = pool_inputs(spec, self.images[order], regions, 1, size, seed=9000 + i)
            if regions is None and spec.of_kind("mask"):
                batch = scheme_masked(spec, batch, MASK_SCHEMES[:1])[0]
            out.append(batch)
        return out


def calibration_images(given: str | None, data: dict, size: tuple[int, int], count: int,
                       domain: str = "A", skip: int = 0) -> Calibration:
    """`count` images of the domain from `given` (a folder or synthetic:TASK) or, when None,
    from the checkpoint's training data `data`, after `skip` images held out for the parity
    gate; CalibrationError saying what to pass when there are not enough."""
    if count < 1:
        raise CalibrationError(f"--calibration-count must be at least 1, got {count}")
    if given is None:
        images, regions = domain_samples(data, size, count + skip, domain)
        source = f"checkpoint data ({data.get('kind')}, domain {domain}, test split)"
        if images is None:
            kind = data.get("kind") or "none recorded"
            raise CalibrationError(
                f"int8 needs calibration images of the domain the model translates from, and "
                f"the checkpoint's training data ({kind}) gives none at {size[0]}x{size[1]}: "
                f"pass --calibration DIR (a folder of such pictures) or --calibration "
                f"synthetic:TASK")
    elif given.startswith(SYNTHETIC_PREFIX):
        images, regions = _synthetic(given, size, count + skip, domain)
        source = f"{given} (domain {domain}, test split)"
    else:
        images, regions = _folder(Path(given), size, count + skip), None
        source = str(given)
    if len(images) <= skip:
        raise CalibrationError(f"calibration source {source} holds {len(images)} images; int8 "
                               f"needs more than {skip} (the first {skip} are held out for the "
                               "parity gate): give a folder with more pictures")
    return Calibration(images[skip:], None if regions is None else regions[skip:], source,
                       images[:skip])


def _synthetic(given: str, size: tuple[int, int], count: int, domain: str
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        kind, task = data_kind(given, paired=False)
    except DataError as err:
        raise CalibrationError(f"--calibration {given}: {err}") from None
    images, regions = domain_samples({"kind": kind, "task": task}, size, count, domain)
    if images is None:
        raise CalibrationError(f"--calibration {given} gives no images at {size[0]}x{size[1]} "
                               "(synthetic images are square): export a square --size, or pass "
                               "a folder")
    return images, regions


def _folder(folder: Path, size: tuple[int, int], count: int) -> torch.Tensor:
    if not folder.is_dir():
        raise CalibrationError(f"--calibration {folder}: no such folder; pass a folder of "
                               "pictures of the domain the model translates from, or "
                               "synthetic:TASK")
    images = held_out_images(list_images(folder, recursive=False)[:count], *size)
    if images is None:
        raise CalibrationError(f"--calibration {folder} holds no picture that decodes (png, "
                               "jpg, ...); put pictures of the model's input domain there")
    return images
