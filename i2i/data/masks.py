"""Mask schemes for Mask CycleGAN: seedable samplers of (N, 1, H, W) float32 masks in {0, 1}.

1 marks a pixel the generator translates, 0 one it keeps. A sampler is named by a short text,
`SCHEME[:ARGS]`, so that a command line or an HTTP query can choose one (parse_mask_spec):

    center:SCALE                 centered square of side SCALE * H (H == W); default 0.5.
                                 The paper uses 0.5, 0.8 and 1.0 (1.0 = CycleGAN). Several
                                 scales joined by / (center:0.5/0.8/1.0, its reference code's
                                 default) draw one of them per mask, uniformly.
    rects[:min_area=0.15,max_rects=5,full=0.0,min_size=0.1,max_size=1.0]
                                 the paper's Algorithm 1: random rectangles until enough area is
                                 covered. The defaults are the paper's; its reference code used
                                 rects:min_area=0.2,max_rects=4,full=0.2.
    attention:PATH[,threshold=0.5]
                                 a grayscale attention map read from an image file (/255,
                                 resized to H x W), 1 where it is >= threshold.

ARGS are comma-separated `name=value` pairs; the first parameter (SCALE, PATH) may be given
without its name. model_attention turns an additive or LOMIT model's mask output into an
attention map for BinaryAttention.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..models import MODELS
from ..models.spec import ModelSpec
from ..pixels import mask_tensor

Seed = torch.Generator | int | None


class MaskSampler(Protocol):
    def sample(self, n: int, height: int, width: int, generator: Seed = None) -> torch.Tensor:
        """(n, 1, height, width) float32 masks in {0, 1}, one per image."""
        ...


def as_generator(seed: Seed) -> torch.Generator:
    """A torch.Generator from a generator (used as is), an int seed, or None (torch's global
    generator, which torch.manual_seed seeds)."""
    if seed is None:
        return torch.default_generator
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def _check_size(n: int, height: int, width: int) -> None:
    if n < 1 or height < 1 or width < 1:
        raise ValueError(f"masks need n, height and width >= 1, got {n}, {height}, {width}")


def _round(x: float) -> int:
    return int(x + 0.5)                             # half up, unlike round()'s half to even


def _in_range(scheme: str, name: str, value: float, low: float, high: float,
              low_open: bool = False) -> None:
    if not (low < value <= high if low_open else low <= value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{scheme}: {name} must be in {interval}, got {value:g}")


# ---------------------------------------------------------------------------------------------
# Centered square


@dataclass(frozen=True)
class CenterSquare:
    """A centered square of side round(scale * min(H, W)); on a square picture its top-left
    corner is at (H - side) // 2, on another it is centered the same way along each axis.
    A tuple of scales draws one per mask (uniformly, from the generator); one scale draws
    nothing."""

    scale: float | tuple[float, ...] = 0.5

    def __post_init__(self) -> None:
        for scale in self.scales:
            _in_range("center", "scale", scale, 0.0, 1.0, low_open=True)

    @property
    def scales(self) -> tuple[float, ...]:
        return self.scale if isinstance(self.scale, tuple) else (self.scale,)

    def sample(self, n: int, height: int, width: int, generator: Seed = None) -> torch.Tensor:
        _check_size(n, height, width)
        scales = self.scales
        picks = [0] * n if len(scales) == 1 else \
            torch.randint(len(scales), (n,), generator=as_generator(generator)).tolist()
        mask = torch.zeros(n, 1, height, width)
        for i, pick in enumerate(picks):
            side = max(1, _round(scales[pick] * min(height, width)))
            top, left = (height - side) // 2, (width - side) // 2
            mask[i, :, top:top + side, left:left + side] = 1
        return mask

    def spec(self) -> str:
        return "center:" + "/".join(f"{scale:g}" for scale in self.scales)


# ---------------------------------------------------------------------------------------------
# Multiple rectangles (Algorithm 1)


MAX_RECTS = 100                     # the most rectangles a scheme may ask for
MAX_DRAWS = 1000                    # rectangles drawn at most for one mask: bounded work


@dataclass(frozen=True)
class RandomRects:
    """The paper's Algorithm 1, per image: draw k uniformly from 1..max_rects, then add random
    rectangles until at least k are drawn and they cover at least min_area of the image (more
    than max_rects rectangles when the area needs them). Each side of a rectangle is between
    min_size and max_size of the image's side; its top-left corner is uniform where the
    smallest rectangle fits. With probability `full` the mask is all ones instead.

    The covered area is that of the union: the paper's pseudo-code adds up rectangle areas, so
    overlaps could leave less than min_area covered there; here min_area holds for every mask.
    min_area = 1 returns the full mask directly (the only mask covering everything).
    """

    min_area: float = 0.15          # Algorithm 1's MinSumRelArea
    max_rects: int = 5              # Algorithm 1's MinMaxNumRects
    full: float = 0.0               # probability of an all-ones mask (reference code: 0.2)
    min_size: float = 0.1           # MinRectSize = Size / 10
    max_size: float = 1.0           # MaxRectSize = Size

    def __post_init__(self) -> None:
        _in_range("rects", "min_area", self.min_area, 0.0, 1.0)
        _in_range("rects", "full", self.full, 0.0, 1.0)
        _in_range("rects", "min_size", self.min_size, 0.0, 1.0, low_open=True)
        _in_range("rects", "max_size", self.max_size, self.min_size, 1.0)
        if self.max_rects < 1:
            raise ValueError(f"rects: max_rects must be >= 1, got {self.max_rects}")
        if self.max_rects > MAX_RECTS:
            raise ValueError(f"rects: max_rects must be at most {MAX_RECTS}, got "
                             f"{self.max_rects}")

    def sample(self, n: int, height: int, width: int, generator: Seed = None) -> torch.Tensor:
        _check_size(n, height, width)
        g = as_generator(generator)
        masks = [self._one(height, width, g) for _ in range(n)]
        return torch.stack(masks)[:, None].float()                      # (N, 1, H, W)

    def _one(self, height: int, width: int, g: torch.Generator) -> torch.Tensor:
        if self.min_area >= 1 or (self.full > 0 and _uniform(g) < self.full):
            return torch.ones(height, width, dtype=torch.bool)
        mask = torch.zeros(height, width, dtype=torch.bool)
        wanted = _randint(1, self.max_rects, g)
        rows, cols = self._extent(height), self._extent(width)
        drawn, covered, needed = 0, 0, self.min_area * height * width
        while drawn < wanted or covered < needed:
            if drawn >= MAX_DRAWS:
                raise ValueError(f"rects: {MAX_DRAWS} rectangles of at most max_size="
                                 f"{self.max_size:g} covered {covered / (height * width):.3f} "
                                 f"of the picture, short of min_area={self.min_area:g}; raise "
                                 "min_size or max_size, or lower min_area")
            i0, i1 = _interval(height, *rows, g)
            j0, j1 = _interval(width, *cols, g)
            covered += int((~mask[i0:i1, j0:j1]).sum())         # newly covered pixels
            mask[i0:i1, j0:j1] = True
            drawn += 1
        return mask

    def _extent(self, side: int) -> tuple[int, int]:
        """(smallest, largest) rectangle side in pixels along an image side of `side`."""
        low = max(1, _round(self.min_size * side))
        return low, max(low, _round(self.max_size * side))

    def spec(self) -> str:
        return "rects:" + ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


def _uniform(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _randint(low: int, high: int, g: torch.Generator) -> int:
    """Uniform over low..high, both included."""
    return int(torch.randint(low, high + 1, (), generator=g))


def _interval(side: int, smallest: int, largest: int, g: torch.Generator) -> tuple[int, int]:
    """[start, stop) of one rectangle side: Algorithm 1's corner draws along one axis."""
    start = _randint(0, side - smallest, g)
    stop = _randint(start + smallest, min(start + largest, side), g)
    return start, stop


# ---------------------------------------------------------------------------------------------
# Binary attention


def binarize(attention: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1.0 where attention >= threshold, else 0.0 (float32, same shape)."""
    return (attention >= threshold).float()


class BinaryAttention:
    """Thresholds one attention map in [0, 1], resized (bilinear) to the requested H x W.

    attention: (H0, W0), shared by every image, or (N, 1, H0, W0), one map per image (then
    sample's n must be N). The masks do not depend on the generator.
    """

    def __init__(self, attention: torch.Tensor, threshold: float = 0.5,
                 source: str | None = None):
        _in_range("attention", "threshold", threshold, 0.0, 1.0)
        if attention.dim() == 2:
            attention = attention[None, None]
        if attention.dim() != 4 or attention.shape[1] != 1:
            raise ValueError("attention: the map must be (H, W) or (N, 1, H, W), got shape "
                             f"{tuple(attention.shape)}")
        attention = attention.float()
        if not bool(((attention >= 0) & (attention <= 1)).all()):
            raise ValueError("attention: the map's values must lie in [0, 1]")
        self.attention = attention                                    # (N or 1, 1, H0, W0)
        self.threshold = threshold
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path, threshold: float = 0.5) -> BinaryAttention:
        """The map of an image file: its grey values in [0, 1] (i2i.pixels.mask_tensor)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"attention: map file {str(path)!r} does not exist")
        try:
            with Image.open(path) as image:
                gray = mask_tensor(image)[0]                              # (H, W) in [0, 1]
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"attention: {str(path)!r} is not a readable image ({err})") from err
        return cls(gray, threshold, source=str(path))

    def sample(self, n: int, height: int, width: int, generator: Seed = None) -> torch.Tensor:
        _check_size(n, height, width)
        maps = self.attention
        if maps.shape[0] not in (1, n):
            raise ValueError(f"attention: {maps.shape[0]} maps cannot mask {n} images")
        if maps.shape[2:] != (height, width):
            maps = F.interpolate(maps, size=(height, width), mode="bilinear",
                                 align_corners=False, antialias=True).clamp(0, 1)
        return binarize(maps, self.threshold).expand(n, -1, -1, -1).contiguous()

    def spec(self) -> str:
        if self.source is None:
            raise ValueError("attention: a map given as a tensor has no text spec")
        return f"attention:{self.source},threshold={self.threshold:g}"


def additive_attention(mask: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """An additive model's mask (N, C, H, W) in [-1, 1] -> attention (N, 1, H, W) in [0, 1].

    |mask| reduced over the channels (mean or max), divided by each image's largest value, so
    a threshold is relative to the strongest change in that image; an all-zero mask stays zero.
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    magnitude = mask.abs()
    a = magnitude.mean(1, keepdim=True) if reduce == "mean" else magnitude.amax(1, keepdim=True)
    peak = a.amax(dim=(1, 2, 3), keepdim=True)                         # (N, 1, 1, 1)
    return torch.where(peak > 0, a / peak.clamp_min(torch.finfo(a.dtype).tiny), 0.0)


@torch.no_grad()
def model_attention(model: nn.Module, image: torch.Tensor, exemplar: torch.Tensor | None = None,
                    reduce: str = "mean") -> torch.Tensor:
    """Attention (N, 1, H, W) in [0, 1] from another i2i model's mask output.

    The model's default signature says which output is a mask: a mask in [0, 1] is used as it
    is (lomit's, which needs an exemplar image (N, C, H, W) of the target look), a signed mask
    through additive_attention (the additive model's).
    """
    name, spec = _mask_model(model)
    pictures = [image] + ([] if exemplar is None else [exemplar])
    wanted = [t.name for t in spec.of_kind("image")]
    if len(pictures) < len(wanted):
        raise ValueError(f"a {name} model needs an {wanted[1]} image for its mask "
                         f"(model_attention(model, image, {wanted[1]}))")
    if len(pictures) > len(wanted):
        raise ValueError(f"an {name} model takes no exemplar")
    out = getattr(model, spec.method)(**dict(zip(wanted, pictures, strict=True)))
    shown = next(t for t in spec.outputs if t.kind in ("mask", "signed_mask"))
    if shown.kind == "mask":
        return out[shown.name]
    return additive_attention(out[shown.name], reduce)


def _mask_model(model: nn.Module) -> tuple[str, ModelSpec]:
    """(registry name, default signature) of a model with a mask output; ValueError if not."""
    with_masks = {name: entry for name, entry in MODELS.items()
                  if any(t.kind in ("mask", "signed_mask")
                         for t in entry.spec(entry.config()).outputs)}
    for name, entry in with_masks.items():
        if type(model) is entry.build:
            return name, entry.spec(model.config)
    raise ValueError(f"attention maps come from {' or '.join(with_masks)} models, not "
                     f"{type(model).__name__}")


# ---------------------------------------------------------------------------------------------
# Text specs


def _scales(raw: str) -> float | tuple[float, ...]:
    """One number, or several joined by / (a tuple)."""
    values = tuple(float(part) for part in raw.split("/"))
    return values[0] if len(values) == 1 else values


# scheme -> (factory, its parameters in order with their types; the first may go unnamed)
SCHEMES: dict[str, tuple[Callable[..., MaskSampler], dict[str, type]]] = {
    "center": (CenterSquare, {"scale": _scales}),
    "rects": (RandomRects, {"min_area": float, "max_rects": int, "full": float,
                            "min_size": float, "max_size": float}),
    "attention": (BinaryAttention.from_file, {"path": str, "threshold": float}),
}
REQUIRED = {"attention": "path"}

# Arguments split at commas that start a `name=` pair, so a file path may hold commas.
_ARG_SPLIT = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")


def parse_mask_spec(text: str) -> MaskSampler:
    """A sampler from `SCHEME[:ARGS]` (see the module docstring); ValueError says what is wrong."""
    scheme, _, args = text.strip().partition(":")
    scheme = scheme.strip()
    if scheme not in SCHEMES:
        close = difflib.get_close_matches(scheme, SCHEMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown mask scheme {scheme!r}{hint}; known: {', '.join(SCHEMES)} "
                         "(e.g. center:0.5, rects:min_area=0.15,max_rects=5, "
                         "attention:map.png,threshold=0.5)")
    factory, types = SCHEMES[scheme]
    values = _parse_args(scheme, args, types)
    missing = REQUIRED.get(scheme)
    if missing and missing not in values:
        raise ValueError(f"{scheme}: {missing} is required, e.g. {scheme}:map.png,threshold=0.5")
    return factory(**values)


def _parse_args(scheme: str, args: str, types: dict[str, type]) -> dict[str, object]:
    values: dict[str, object] = {}
    items = [item.strip() for item in _ARG_SPLIT.split(args)] if args.strip() else []
    for item in items:
        name, equals, raw = item.partition("=")
        if not equals:                      # only the first item can lack a name (_ARG_SPLIT)
            name, raw = next(iter(types)), item
        name, raw = name.strip(), raw.strip()
        if name not in types:
            raise ValueError(f"{scheme}: unknown parameter {name!r}; parameters: "
                             f"{', '.join(types)}")
        if name in values:
            raise ValueError(f"{scheme}: parameter {name!r} is given twice")
        values[name] = _convert(scheme, name, raw, types[name])
    return values


def _convert(scheme: str, name: str, raw: str, kind: type) -> object:
    if not raw:
        raise ValueError(f"{scheme}: {name} has no value")
    if kind is str:
        return raw
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{scheme}: {name} must be {what}, got {raw!r}") from None
