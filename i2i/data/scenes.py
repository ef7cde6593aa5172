"""Synthetic two-attribute scenes for LOMIT: a coloured disc on a plain or striped background.

Each image holds two independent attributes that live in separate regions:
- "object_color" (red / blue) changes only the pixels the disc covers;
- "background" (plain / striped) changes only the pixels the disc does not cover.
So a local translation has a right answer: its mask should be the disc for object_color and the
complement of the disc for background, and `translate_truth` renders the exact output a perfect
translator would give (the same scene with one attribute value replaced).

Every image is a pure function of (seed, size, split, index, labels). The scene parameters (disc
geometry, colour jitter, background colour, stripe period and phase) and the pixel noise come
from local numpy generators seeded through `stable_seed` and do NOT depend on the labels, so
sample(i, {"object_color": 0}) and sample(i, {"object_color": 1}) are the same scene, noise
included, with only the disc's colour changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .shapes import SPLITS, check_settings, offsets, stable_seed

# Attribute name -> value names; a label is the index of its value name (0 or 1).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "object_color": ("red", "blue"),
    "background": ("plain", "striped"),
}

MIN_SIZE = 8
RADIUS_RANGE = (0.2, 0.32)  # disc radius as a fraction of the image size
EDGE_MARGIN = 1.0  # pixels of pure background kept between the disc's soft edge and the border
# Base object colours (RGB in [-1, 1]) and the per-channel jitter added to them. The bases are
# >= 1.4 apart in the red and blue channels while the jitter is +-0.1, so the classes never meet.
OBJECT_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.8, -0.6, -0.6),
    "blue": (-0.6, -0.4, 0.8),
}
COLOR_JITTER = 0.1
BACKGROUND_RANGE = (-0.4, 0.2)  # each background channel, mid-grey-ish
STRIPE_AMPLITUDE = 0.35  # added to all three channels: a sine of this amplitude
STRIPE_PERIOD_RANGE = (5.0, 9.0)  # pixels, measured across the (diagonal) stripes

# Purposes mixed into the seed, so the streams never coincide. A fixed tag keeps them apart from
# the streams of i2i.data.shapes.SyntheticShapes under the same user seed.
_TAG = 0x4C4F4D49  # "LOMI"
_SCENE, _LABELS, _NOISE = 0, 1, 2


@dataclass(frozen=True)
class AttributeMeta:
    """What was drawn for one image; coordinates are pixels, x = column, y = row."""

    labels: dict[str, int]  # {"object_color": 0|1, "background": 0|1}
    center: tuple[float, float]  # disc centre (cx, cy)
    radius: float  # disc radius
    object_rgb: tuple[float, float, float]  # disc colour, RGB in [-1, 1]
    background_rgb: tuple[float, float, float]  # background base colour, RGB in [-1, 1]
    stripe_period: float | None  # pixels across the stripes; None for a plain background
    stripe_phase: float | None = None  # radians; None for a plain background

    def coverage(self, size: int) -> np.ndarray:
        """(size, size) float64 in [0, 1]: the disc's one-pixel anti-aliased coverage.

        Same rule as i2i.data.shapes: clip(radius - distance + 0.5, 0, 1) from each pixel centre.
        """
        dx, dy = offsets(size, self.center)  # (1, size), (size, 1)
        dist = np.sqrt(dx * dx + dy * dy)  # (size, size)
        return np.clip(self.radius - dist + 0.5, 0.0, 1.0)

    def region(self, size: int) -> torch.Tensor:
        """(size, size) bool: True where the disc covers more than half of the pixel."""
        return torch.from_numpy(self.coverage(size) > 0.5)

    def background(self, size: int) -> np.ndarray:
        """(3, size, size) float64: the background field alone (base colour + stripes)."""
        base = np.asarray(self.background_rgb, dtype=np.float64)[:, None, None]  # (3, 1, 1)
        field = np.broadcast_to(base, (3, size, size)).copy()
        if self.stripe_period is not None:
            coords = np.arange(size, dtype=np.float64) + 0.5
            # Distance along the diagonal normal (1, 1) / sqrt(2): stripes run at -45 degrees.
            u = (coords[None, :] + coords[:, None]) / math.sqrt(2.0)  # (size, size)
            phase = self.stripe_phase or 0.0
            stripes = STRIPE_AMPLITUDE * np.sin(2.0 * math.pi * u / self.stripe_period + phase)
            field = field + stripes[None]  # same offset in every channel: a luminance pattern
        return field

    def render(self, size: int) -> np.ndarray:
        """(3, size, size) float64: the noise-free image, background * (1 - cov) + object * cov.

        The stripes are part of the background, so the disc hides them. Where cov is exactly 0 or
        1 the result is exactly the background or the object colour, bit for bit: that is what
        makes the "only one region changes" property exact.
        """
        cov = self.coverage(size)[None]  # (1, size, size)
        obj = np.asarray(self.object_rgb, dtype=np.float64)[:, None, None]  # (3, 1, 1)
        return self.background(size) * (1.0 - cov) + obj * cov


@dataclass(frozen=True)
class _Scene:
    """The label-independent draws of one index (both colour classes share the jitter)."""

    center: tuple[float, float]
    radius: float
    jitter: np.ndarray  # (3,) added to the chosen object base colour
    background_rgb: np.ndarray  # (3,)
    stripe_period: float
    stripe_phase: float


def _label_value(attribute: str, value: int | str) -> int:
    """Validate one attribute value given as its index or its name; returns the index."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")
    names = ATTRIBUTES[attribute]
    if isinstance(value, str):
        if value in names:
            return names.index(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(names):
            return int(value)
    known = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    raise ValueError(f"unknown value {value!r} for attribute {attribute!r}; known: {known}")


class AttributeShapes:
    """Red or blue discs on plain or striped backgrounds: (3, size, size) float32 in [-1, 1]."""

    def __init__(
        self,
        size: int = 64,
        split: str = "train",
        seed: int = 0,
        length: int = 1000,
        noise: float = 0.03,
    ) -> None:
        check_settings(size, split, length, noise)
        self.size, self.split, self.seed = int(size), split, int(seed)
        self.length, self.noise = int(length), float(noise)

    def __len__(self) -> int:
        return self.length

    def labels(self, index: int) -> dict[str, int]:
        """The labels drawn at random for `index` (uniform and independent per attribute)."""
        self._check_index(index)
        rng = np.random.default_rng(self._seed(index, _LABELS))
        draws = rng.integers(0, 2, size=len(ATTRIBUTES))
        return {name: int(v) for name, v in zip(ATTRIBUTES, draws, strict=True)}

    def meta(self, index: int, labels: dict[str, int | str] | None = None) -> AttributeMeta:
        """The parameters of image `index`, without rendering it.

        labels None: the random labels of `index`. Given: each listed attribute is forced (by
        index or value name); attributes left out keep the random label of `index`.
        """
        chosen = self.labels(index)  # also checks the index
        for name, value in (labels or {}).items():
            chosen[name] = _label_value(name, value)
        scene = self._scene(index)
        color = ATTRIBUTES["object_color"][chosen["object_color"]]
        obj = np.clip(np.asarray(OBJECT_RGB[color]) + scene.jitter, -1.0, 1.0)
        striped = ATTRIBUTES["background"][chosen["background"]] == "striped"
        return AttributeMeta(
            labels=chosen,
            center=scene.center,
            radius=scene.radius,
            object_rgb=tuple(float(v) for v in obj),
            background_rgb=tuple(float(v) for v in scene.background_rgb),
            stripe_period=scene.stripe_period if striped else None,
            stripe_phase=scene.stripe_phase if striped else None,
        )

    def sample(
        self, index: int, labels: dict[str, int | str] | None = None
    ) -> tuple[torch.Tensor, AttributeMeta]:
        """Image `index`: (3, size, size) float32 in [-1, 1], and its AttributeMeta.

        Forcing labels re-renders the SAME scene (geometry, colour jitter, background colour,
        stripe period/phase and pixel noise) with other attribute values.
        """
        meta = self.meta(index, labels)
        image = meta.render(self.size)  # (3, S, S) float64
        if self.noise > 0:
            # The noise stream ignores the labels: a translation's ground truth shares the input's
            # noise, so input and truth differ only where the attribute lives.
            rng = np.random.default_rng(self._seed(index, _NOISE))
            image = image + rng.normal(0.0, self.noise, size=image.shape)
        image = np.clip(image, -1.0, 1.0)
        return torch.from_numpy(image.astype(np.float32)), meta

    def translate_truth(
        self, index: int, attribute: str, value: int | str
    ) -> tuple[torch.Tensor, AttributeMeta]:
        """Image `index` with `attribute` set to `value` and everything else as drawn: the output
        of a perfect translator given sample(index) and any exemplar with that value."""
        return self.sample(index, {attribute: _label_value(attribute, value)})

    def describe(self) -> dict:
        """JSON-able description, enough to rebuild this dataset."""
        return {
            "kind": "synthetic_attributes",
            "size": self.size,
            "split": self.split,
            "seed": self.seed,
            "length": self.length,
            "noise": self.noise,
            "attributes": {name: list(values) for name, values in ATTRIBUTES.items()},
        }

    def _scene(self, index: int) -> _Scene:
        """The label-independent draws of `index`, always in the same order."""
        rng = np.random.default_rng(self._seed(index, _SCENE))
        radius = float(rng.uniform(*RADIUS_RANGE)) * self.size
        # cx - r >= margin puts the centre of column 0 at distance >= r + 0.5: zero coverage.
        low, high = radius + EDGE_MARGIN, self.size - radius - EDGE_MARGIN
        cx, cy = rng.uniform(low, high, size=2)
        jitter = rng.uniform(-COLOR_JITTER, COLOR_JITTER, size=3)
        background = rng.uniform(*BACKGROUND_RANGE, size=3)
        period = float(rng.uniform(*STRIPE_PERIOD_RANGE))
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        return _Scene((float(cx), float(cy)), radius, jitter, background, period, phase)

    def _seed(self, index: int, purpose: int) -> int:
        split_code = SPLITS.index(self.split)
        return stable_seed(_TAG, self.seed, self.size, split_code, index, purpose)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic images")
