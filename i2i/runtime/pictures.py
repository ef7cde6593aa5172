"""Decoded pictures -> one signature's full-size inputs -> its outputs at the picture's size.

What /v1/translate, folder translation and the Python API share: the translated picture keeps
its own size; the model's other image inputs (LOMIT's exemplar) are scaled to it; a mask picture
must have the picture's size; a mask scheme is drawn on the picture's own pixels; knobs are
numbers. The batch is checked once at full size (names, channels, mask and knob values), then
the resolution policy (i2i.runtime.resolution) runs it through the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from PIL import Image

from .. import pixels
from ..data.masks import MaskSampler
from ..engines import EngineSpec, check_batch
from ..models.spec import InputError, ModelSpec, TensorSpec
from . import resolution as policies
from .resolution import Resolution, Run, resample


@dataclass(frozen=True)
class Scheme:
    """A mask scheme drawn on each picture for the mask input `target`."""

    target: TensorSpec
    sampler: MaskSampler
    seed: int
    label: str                      # how the user named it, for error messages


Picture = Image.Image | torch.Tensor     # a PIL image, or (C, H, W) float in the kind's range


def build_inputs(spec: EngineSpec, images: dict[str, Picture],
                 masks: dict[str, Picture] | None = None, scheme: Scheme | None = None,
                 knobs: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """{input name: (1, C, H, W) at the first image's size, or (1, 1) for a knob}."""
    primary = spec.default.image
    height, width = _size(images[primary.name])
    kinds = {t.name: t for s in spec.model_signatures.values() for t in s.inputs}
    inputs = {}
    for name, img in images.items():
        x = _tensor(img, kinds[name])
        inputs[name] = resample(x, (height, width), kinds[name])     # a second picture: scaled
    for name, img in (masks or {}).items():
        if _size(img) != (height, width):
            h, w = _size(img)
            raise InputError(f"{name} is {w}x{h} pixels; it must have the image's size, "
                             f"{width}x{height} (width x height)")
        inputs[name] = _tensor(img, kinds[name])
    if scheme is not None:
        try:
            inputs[scheme.target.name] = scheme.sampler.sample(1, height, width,
                                                               generator=scheme.seed)
        except ValueError as err:
            raise InputError(f"{scheme.label}: {err}") from err
    for name, value in (knobs or {}).items():
        inputs[name] = torch.tensor([[float(value)]])
    return inputs


def _size(picture: Picture) -> tuple[int, int]:
    """(H, W) of a PIL image or a (C, H, W) tensor."""
    if isinstance(picture, torch.Tensor):
        return int(picture.shape[-2]), int(picture.shape[-1])
    return picture.size[1], picture.size[0]


def _tensor(picture: Picture, t: TensorSpec) -> torch.Tensor:
    """(1, C, H, W) float32 for the input `t` from a PIL image or a (C, H, W) tensor."""
    if isinstance(picture, torch.Tensor):
        if picture.dim() != 3:
            raise InputError(f"{t.name} must be one (C, H, W) tensor, got shape "
                             f"{tuple(picture.shape)}")
        return picture.detach().to("cpu", torch.float32)[None]
    if t.kind == "mask":
        return pixels.mask_tensor(picture)[None]
    return pixels.image_tensor(picture, t.channels)[None]          # grey for 1 channel


def full_size_check(spec: EngineSpec, inputs: dict[str, torch.Tensor]) -> ModelSpec:
    """The signature the inputs pick, after checking them at full size (any H x W)."""
    check_batch(dataclasses.replace(spec, max_batch_size=1), inputs, sizes=False)
    return spec.signatures[spec.signature(inputs)]


async def translate(run: Run, spec: EngineSpec, inputs: dict[str, torch.Tensor],
                    resolution: Resolution, cpu=policies.inline
                    ) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """(the signature, its outputs at the picture's size); cpu: see resolution.translate."""
    signature = full_size_check(spec, inputs)
    outputs = await policies.translate(run, spec, signature, inputs, resolution, cpu)
    return signature, outputs
