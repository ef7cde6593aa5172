"""The Python API: translate pictures with a checkpoint or an export, each at its own size.

    import i2i
    out = i2i.translate("cat.jpg", model="exports/additive")            # a PIL image back
    model = i2i.open("exports/lomit")                                    # keeps the engine
    outs = model.translate(["a.png", "b.png"], exemplar="ref.png")       # batched together

A picture is a path, a PIL image, a numpy array ((H, W, C) or (H, W) uint8, or float in
[0, 1]) or a tensor ((C, H, W) or (N, C, H, W) float in the model's range, [-1, 1] for
images); a list of them gives a list back. What comes back has the kind of what went in
(a path gives a PIL image). The model's other inputs are keyword arguments named like them:
a second picture (exemplar=...), a mask (mask=... a picture, 1 = translate, or a scheme such as
"center:0.5" drawn with `seed`), a knob (strength=0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import pixels
from .data.masks import parse_mask_spec
from .engines import open_engine
from .models.spec import InputError, TensorSpec
from .runtime import images as decoding
from .runtime.kinds import input_kinds
from .runtime.pictures import Scheme
from .runtime.resolution import Resolution
from .runtime.translator import Request, Result, Translator

PictureLike = str | Path | Image.Image | np.ndarray | torch.Tensor


class Model:
    """An opened model: the engine stays loaded; lists are translated in shared batches."""

    def __init__(self, engine, resolution: str = "auto", working: int | None = None,
                 max_batch: int = 8, max_pixels: int = decoding.DEFAULT_MAX_PIXELS):
        self.engine, self.spec = engine, engine.spec
        self.translator = Translator(engine, max_batch, resolution=Resolution(resolution,
                                                                              working))
        self.max_pixels = max_pixels

    def translate(self, images: PictureLike | list[PictureLike], *, output: str | None = None,
                  resolution: str | None = None, working: int | None = None, seed: int = 0,
                  **inputs: Any) -> Any:
        """The translation (or the output named `output`) of each picture, of its kind."""
        many = isinstance(images, list) or (isinstance(images, torch.Tensor)
                                            and images.dim() == 4)
        items = list(images) if many else [images]
        policy = None if resolution is None and working is None else Resolution(
            resolution or self.translator.resolution.policy, working)
        requests = [self._request(item, inputs, seed) for item in items]
        results = self.translator.translate_many(requests, policy)
        pictures = [_give_back(item, self._shown(r, output)) for item, r in zip(items, results,
                                                                                strict=True)]
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return torch.stack(pictures)
        return pictures if many else pictures[0]

    def _request(self, item: PictureLike, inputs: dict[str, Any], seed: int) -> Request:
        kinds = input_kinds(self.spec)
        unknown = sorted(set(inputs) - set(kinds))
        if unknown:
            raise InputError(f"{self.spec.model} has no input {unknown[0]!r}; its inputs: "
                             f"{sorted(kinds)}")
        primary = self.spec.default.image
        request = Request({primary.name: self._picture(item, primary.name, "image")})
        for name, value in inputs.items():
            if kinds[name] == "knob":
                request.knobs[name] = float(value)
            elif kinds[name] == "mask" and isinstance(value, str) and not Path(value).exists():
                target = next(t for s in self.spec.model_signatures.values()
                              for t in s.inputs if t.name == name)
                request.scheme = Scheme(target, parse_mask_spec(value), seed, f"{name}={value}")
            elif kinds[name] == "mask":
                request.masks[name] = self._picture(value, name, "mask")
            else:
                request.images[name] = self._picture(value, name, "image")
        return request

    def _picture(self, value: PictureLike, name: str, kind: str) -> Image.Image | torch.Tensor:
        mode = "L" if kind == "mask" else "RGB"
        if isinstance(value, str | Path):
            return decoding.decode(Path(value).read_bytes(), self.max_pixels, str(value), mode,
                                   limit_hint="i2i.open(..., max_pixels=N)")
        if isinstance(value, Image.Image):
            return value.convert(mode)
        if isinstance(value, np.ndarray):
            return Image.fromarray(_uint8(value)).convert(mode)
        if isinstance(value, torch.Tensor):
            return value
        raise InputError(f"{name}: give a path, a PIL image, a numpy array or a tensor, not "
                         f"{type(value).__name__}")

    def _shown(self, result: Result, output: str | None) -> tuple[TensorSpec, torch.Tensor]:
        described = {t.name: t for t in result.signature.outputs}
        composite = result.signature.composite
        name = output or (composite.output if composite else result.signature.outputs[0].name)
        if name not in described:
            raise InputError(f"output {name!r} is not an output of {self.spec.model}; choose "
                             f"from {list(described)}")
        return described[name], result.outputs[name][0]


def _uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    raise InputError(f"numpy pictures are uint8 or float in [0, 1], not {array.dtype}")


def _give_back(item: PictureLike, shown: tuple[TensorSpec, torch.Tensor]) -> Any:
    """The output (C, H, W) as the kind of picture `item` was."""
    t, value = shown
    if isinstance(item, torch.Tensor):
        return value
    picture = pixels.to_image(value) if t.kind == "image" else Image.fromarray(
        pixels.mask_array(value.abs().mean(0, keepdim=True) if t.kind == "signed_mask"
                          else value))
    if isinstance(item, np.ndarray):
        return np.asarray(picture)
    return picture


def open(model: str | Path, *, engine: str | None = None, device: str = "auto",
         precision: str = "auto", resolution: str = "auto", working: int | None = None,
         max_batch: int = 8, max_pixels: int = decoding.DEFAULT_MAX_PIXELS) -> Model:
    """Open a checkpoint (.safetensors) or an i2i-export folder. engine: eager, fused,
    onnxruntime, openvino, tensorrt, aoti or auto (the export's fastest artifact that passed its
    gate; model.engine.spec.choice says which and why) (default onnxruntime for an export, eager
    for a checkpoint); precision: auto, fp32, fp16, bf16 or int8;
    resolution: auto, native, tile, mask or resize (i2i.runtime.resolution)."""
    path = Path(model)
    export = path.is_dir()
    opened = open_engine(engine or ("onnxruntime" if export else "eager"),
                         export_dir=path if export else None,
                         checkpoint=None if export else path, device=device,
                         precision=precision, max_batch_size=max_batch)
    return Model(opened, resolution, working, max_batch, max_pixels)


def translate(images: PictureLike | list[PictureLike], model: str | Path | Model, **kwargs: Any
              ) -> Any:
    """Translate one picture or a list with `model` (a path: see open(); or an opened Model).
    Keyword arguments: those of open() and of Model.translate()."""
    opening = {k: kwargs.pop(k) for k in ("engine", "device", "precision", "max_batch",
                                          "max_pixels") if k in kwargs}
    opened = model if isinstance(model, Model) else open(model, **opening)
    return opened.translate(images, **kwargs)
