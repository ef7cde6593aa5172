"""Resolution policies: how a picture of any size goes through a model and comes back at its
own size. One implementation for /v1/translate, folder translation and the Python API.

    native   the model runs at the picture's own size: reflect-padded to the size multiple,
             cropped back. The default where the engine takes any size.
    tile     overlapping tiles of a working size, blended with linear ramps across the overlaps;
             for pictures beyond the native budget and for fixed-size engines (aoti, tensorrt).
             Memory: the tiles in flight, plus the full-size outputs being accumulated.
    mask     for signatures whose output is the input changed through a mask (ModelSpec's
             `composite`): the model runs at a working size, the change (add) or the mask
             (blend) is upsampled and applied to the full-resolution input, so pixels the mask
             leaves alone stay as they were.
    resize   the whole picture squashed to the model's size and the result scaled back (for
             models trained on whole-image statistics).

Every function takes the full-size inputs {name: (1, C, H, W)} of one signature (every spatial
input at the picture's H x W; knobs (1, 1)) and `run`, an async function from a batch to its
outputs (a Batcher's submit), and returns every output at H x W.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engines import EngineSpec
from ..models.spec import InputError, ModelSpec, TensorSpec

POLICIES = ("auto", "native", "tile", "mask", "resize")
NATIVE_BUDGET = 2048 * 2048         # auto: pictures above this many pixels are tiled
DEFAULT_TILE = 512                  # tile side where the engine takes any size
Tensors = dict[str, torch.Tensor]
Run = Callable[[Tensors], Awaitable[Tensors]]


@dataclass(frozen=True)
class Resolution:
    """A policy and its working size (tile side for tile, long side for mask; None: the
    engine's fixed size, else DEFAULT_TILE for tile and the training size for mask)."""

    policy: str = "auto"
    working: int | None = None
    native_budget: int = NATIVE_BUDGET

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"unknown resolution policy {self.policy!r}; known: "
                             f"{', '.join(POLICIES)}")
        if self.working is not None and self.working < 1:
            raise InputError(f"the working size must be a positive number of pixels, got "
                             f"{self.working}")


def choose(resolution: Resolution, spec: EngineSpec, signature: ModelSpec,
           size: tuple[int, int]) -> str:
    """The policy that runs: `auto` becomes native where the engine takes any size and the
    picture is within the native budget, else tile; an impossible choice is an InputError."""
    policy = resolution.policy
    if policy == "auto":
        small = size[0] * size[1] <= resolution.native_budget
        return "native" if spec.size is None and small else "tile"
    if policy == "native" and spec.size is not None:
        raise InputError(f"resolution=native needs an engine that takes any size; this one "
                         f"takes only {spec.size[0]}x{spec.size[1]}: use tile, mask or resize")
    if policy == "native" and size[0] * size[1] > resolution.native_budget:
        error = InputError(f"resolution=native would run {size[0] * size[1]} pixels at once; "
                           f"at most {resolution.native_budget} may run together (raise it "
                           "with --max-run-pixels): use tile or mask for this picture")
        error.status = 413
        raise error
    if policy == "mask" and signature.composite is None:
        raise InputError(f"resolution=mask applies to models whose output is the input changed "
                         f"through a mask; {spec.model} changes whole pictures: use native, "
                         "tile or resize")
    return policy


async def inline(fn: Callable, *args):
    """The default `cpu` runner: fn(*args) right here."""
    return fn(*args)


async def translate(run: Run, spec: EngineSpec, signature: ModelSpec, inputs: Tensors,
                    resolution: Resolution, cpu: Callable[..., Awaitable] = inline) -> Tensors:
    """Every output of `signature` at the inputs' H x W under `resolution`. cpu(fn, *args)
    runs the resampling, padding and blending (a server passes its thread pool's runner, so
    the event loop stays free)."""
    size = _size(signature, inputs)
    policy = choose(resolution, spec, signature, size)
    if policy == "native":
        return await _native(run, cpu, signature, inputs)
    if policy == "resize":
        return await _resized(run, cpu, signature, inputs, spec.size or spec.default_size,
                              size)
    if policy == "mask":
        return await _masked(run, cpu, signature, inputs,
                             _mask_working(resolution, spec, signature, size))
    return await _tiled(run, cpu, signature, inputs, _tile_side(resolution, spec, signature))


def _size(signature: ModelSpec, inputs: Tensors) -> tuple[int, int]:
    image = inputs[signature.image.name]
    return int(image.shape[2]), int(image.shape[3])


def _round(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


# ---------------------------------------------------------------------------------------------
# Resampling: images bicubic (clamped to their range), masks bilinear; antialiased downwards.


def resample(x: torch.Tensor, size: tuple[int, int], t: TensorSpec) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, H, W) by the tensor's kind, kept inside its range."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bicubic" if t.kind == "image" else "bilinear"
    down = size[0] < x.shape[2] or size[1] < x.shape[3]
    out = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=down)
    return out.clamp(*t.range)


def pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, h, w) padded at the bottom and right to height x width: reflected where the
    picture is large enough, edge pixels repeated where it is not."""
    dh, dw = height - x.shape[2], width - x.shape[3]
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < x.shape[2] and dw < x.shape[3] else "replicate"
    return F.pad(x, (0, dw, 0, dh), mode=mode)


# ---------------------------------------------------------------------------------------------
# The policies


def _padded(inputs: Tensors, height: int, width: int) -> Tensors:
    return {k: pad(v, height, width) if v.dim() == 4 else v for k, v in inputs.items()}


def _scaled(tensors: Tensors, size: tuple[int, int], specs: tuple[TensorSpec, ...]) -> Tensors:
    """Every spatial tensor of `specs` found in `tensors` resampled to `size`; others as they
    are."""
    kinds = {t.name: t for t in specs}
    return {k: resample(v, size, kinds[k]) if k in kinds and kinds[k].spatial else v
            for k, v in tensors.items()}


async def _native(run: Run, cpu, signature: ModelSpec, inputs: Tensors) -> Tensors:
    h, w = _size(signature, inputs)
    out = await run(await cpu(_padded, inputs, *signature.padded(h, w)))
    return {k: v[:, :, :h, :w] for k, v in out.items()}


async def _resized(run: Run, cpu, signature: ModelSpec, inputs: Tensors,
                   model_size: tuple[int, int], size: tuple[int, int]) -> Tensors:
    out = await run(await cpu(_scaled, inputs, model_size, signature.inputs))
    return await cpu(_scaled, out, size, signature.outputs)


def _mask_working(resolution: Resolution, spec: EngineSpec, signature: ModelSpec,
                  size: tuple[int, int]) -> tuple[int, int]:
    """The working H x W of the mask policy: the picture's aspect, the long side at the working
    size (never above the picture's own), multiples of the model's size multiple; the engine's
    own size where it is fixed."""
    if spec.size is not None:
        return spec.size
    long_side = resolution.working or max(spec.default_size)
    scale = min(1.0, long_side / max(size))
    m = spec.size_multiple
    return signature.padded(_round(size[0] * scale, m), _round(size[1] * scale, m))


async def _masked(run: Run, cpu, signature: ModelSpec, inputs: Tensors,
                  working: tuple[int, int]) -> Tensors:
    small = await cpu(_scaled, inputs, working, signature.inputs)
    out = await run(small)
    return await cpu(_composited, signature, inputs, small, out)


def _composited(signature: ModelSpec, inputs: Tensors, small: Tensors, out: Tensors
                ) -> Tensors:
    """The working-size outputs `out` at the picture's size, the translation composed from the
    full-size input through the signature's composite."""
    composite = signature.composite
    size = _size(signature, inputs)
    described = {t.name: t for t in signature.outputs}
    full = _scaled(out, size, signature.outputs)
    image_name = signature.image.name
    x, x_small = inputs[image_name], small[image_name]
    if composite.rule == "add":
        change = resample(out[composite.output] - x_small, size,
                          TensorSpec("change", (-1, x.shape[1], -1, -1), range=(-2.0, 2.0),
                                     kind="signed_mask"))
        full[composite.output] = (x + change).clamp(*described[composite.output].range)
    else:
        m = inputs[composite.mask] if composite.mask in inputs else full[composite.mask]
        translated = full[composite.output]
        full[composite.output] = x * (1 - m) + translated * m
    return full


def _tile_side(resolution: Resolution, spec: EngineSpec, signature: ModelSpec
               ) -> tuple[int, int]:
    if spec.size is not None:
        return spec.size
    m = spec.size_multiple
    largest = max(math.isqrt(resolution.native_budget) // m * m, signature.smallest)
    side = max(min(_round(resolution.working or DEFAULT_TILE, m), largest), signature.smallest)
    return side, side


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: every `tile - overlap` pixels, the last flush with the end."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """(length,) blending weights: rising over the overlap at a start that has a neighbour
    before it, falling at an end with one after it, 1 in between (never 0)."""
    w = torch.ones(length)
    if overlap > 0:
        edge = (torch.arange(overlap, dtype=torch.float32) + 1) / (overlap + 1)
        if not first:
            w[:overlap] = torch.minimum(w[:overlap], edge)
        if not last:
            w[-overlap:] = torch.minimum(w[-overlap:], edge.flip(0))
    return w


async def _run_tile(run: Run, signature: ModelSpec, crop: Tensors) -> Tensors:
    """One tile; a tile in which a mask that must select something selects nothing is left as
    it is (the output where a blend's mask is 0 is the input), without running the model."""
    empty = [t for t in signature.of_kind("mask")
             if t.nonempty and not bool((crop[t.name] > 0).any())]
    if not empty or signature.composite is None or signature.composite.rule != "blend":
        return await run(crop)
    image = crop[signature.image.name]
    return {t.name: image if t.name == signature.composite.output
            else torch.zeros(1, t.channels, *image.shape[2:]) for t in signature.outputs}


async def _tiled(run: Run, cpu, signature: ModelSpec, inputs: Tensors, tile: tuple[int, int]
                 ) -> Tensors:
    h, w = _size(signature, inputs)
    th, tw = tile
    height, width = max(h, th), max(w, tw)
    padded = await cpu(_padded, inputs, height, width)
    oh, ow = th // 4, tw // 4                      # overlap: a quarter of the tile
    rows, cols = _starts(height, th, oh), _starts(width, tw, ow)
    sums: Tensors = {}
    weight = torch.zeros(1, 1, height, width)
    for i, top in enumerate(rows):                 # a row of tiles in flight at a time
        crops = [{k: v[:, :, top:top + th, left:left + tw] if v.dim() == 4 else v
                  for k, v in padded.items()} for left in cols]
        results = await asyncio.gather(*(_run_tile(run, signature, c) for c in crops))
        edges = (i == 0, i == len(rows) - 1)
        await cpu(_accumulate, sums, weight, results, top, cols, tile, edges)
    return await cpu(_normalised, sums, weight, h, w)


def _accumulate(sums: Tensors, weight: torch.Tensor, results: list[Tensors], top: int,
                cols: list[int], tile: tuple[int, int], edges: tuple[bool, bool]) -> None:
    """Add one row of tile outputs, weighted by their ramps, into the full-size sums."""
    th, tw = tile
    wy = _ramp(th, th // 4, *edges)
    for j, (left, out) in enumerate(zip(cols, results, strict=True)):
        wx = _ramp(tw, tw // 4, j == 0, j == len(cols) - 1)
        wt = (wy[:, None] * wx[None, :])[None, None]                        # (1, 1, th, tw)
        weight[:, :, top:top + th, left:left + tw] += wt
        for name, value in out.items():
            if name not in sums:
                sums[name] = torch.zeros(1, value.shape[1], *weight.shape[2:])
            sums[name][:, :, top:top + th, left:left + tw] += value * wt


def _normalised(sums: Tensors, weight: torch.Tensor, h: int, w: int) -> Tensors:
    return {k: (v / weight)[:, :, :h, :w] for k, v in sums.items()}
