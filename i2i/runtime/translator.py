"""Translator: an engine, a batcher and the picture path, for folders and the Python API.

    translator = Translator(open_engine("onnxruntime", export_dir=Path("exports/additive")))
    results = translator.translate_many([Request({"image": picture})])   # batched together

Each request's pictures go through i2i.runtime.pictures (full-size inputs, one check) and the
resolution policy; concurrent requests (and the tiles of one) share the batcher's batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..models.spec import ModelSpec
from .batcher import Batcher
from .pictures import Scheme, build_inputs, translate
from .resolution import Resolution

DEFAULT_BATCH = 8


@dataclass
class Request:
    """One picture to translate and what goes with it."""

    images: dict[str, Image.Image]                  # by input name, the translated one first
    masks: dict[str, Image.Image] = field(default_factory=dict)     # grey, the picture's size
    scheme: Scheme | None = None
    knobs: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    signature: ModelSpec
    inputs: dict[str, torch.Tensor]                 # full size, as given to the model
    outputs: dict[str, torch.Tensor]                # at the picture's size


class Translator:
    def __init__(self, engine, max_batch: int = DEFAULT_BATCH, max_delay_ms: float = 5.0,
                 resolution: Resolution | None = None):
        self.engine, self.spec = engine, engine.spec
        self.max_batch = min(max_batch, self.spec.max_batch_size)
        self.max_delay_ms = max_delay_ms
        self.resolution = resolution or Resolution()

    def batcher(self, queue: int | None = None) -> Batcher:
        return Batcher(self.engine.run, self.max_batch, self.max_delay_ms,
                       max_queue=queue or 64 * self.max_batch, default_timeout_ms=None)

    async def one(self, submit: Callable[[dict], Awaitable[dict]], request: Request,
                  resolution: Resolution | None = None) -> Result:
        inputs = build_inputs(self.spec, request.images, request.masks, request.scheme,
                              request.knobs)
        signature, outputs = await translate(submit, self.spec, inputs,
                                             resolution or self.resolution)
        return Result(signature, inputs, outputs)

    def translate_many(self, requests: list[Request], resolution: Resolution | None = None
                       ) -> list[Result]:
        """Every request, concurrently through one batcher; raises the first error."""
        async def run() -> list[Result]:
            batcher = self.batcher()
            await batcher.start()
            try:
                return await asyncio.gather(*(self.one(batcher.submit, r, resolution)
                                              for r in requests))
            finally:
                await batcher.stop(drain=True)
        return asyncio.run(run())
