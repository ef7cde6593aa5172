"""Synthetic shapes: the built-in default data, needing no download.

Domain A of "circle2square" holds soft-edged circles and domain B squares ("square2circle" swaps
them). Every image is a pure function of (task, size, split, paired, seed, domain, index): the
parameters and the noise come from a local numpy generator seeded from those values, never from
global RNG state, so runs, tests and resumed training all see the same pixels.

Paired sets draw the shape parameters (centre, radius, colours) once per index and share them
between A and B, so B's square is exactly the bounding square of A's circle. The pixel noise is
drawn per domain, so A and B of a pair carry independent noise of the same strength.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Task name -> (shape of domain A, shape of domain B).
TASKS: dict[str, tuple[str, str]] = {
    "circle2square": ("circle", "square"),
    "square2circle": ("square", "circle"),
}
SPLITS: tuple[str, ...] = ("train", "test")
DOMAINS: tuple[str, ...] = ("A", "B")

MIN_SIZE = 8
RADIUS_RANGE = (0.18, 0.32)  # radius as a fraction of the image size
MIN_COLOR_DISTANCE = 0.8
# Random hues, but the shape is lighter than the background on the whole: a contrast a small
# generator learns to follow within minutes on a CPU.
FG_RANGE = (-0.2, 1.0)
BG_RANGE = (-1.0, 0.2)  # RGB Euclidean distance between fg and bg, in [-1, 1] units
EDGE_MARGIN = 1.0  # pixels of pure background kept between the shape and the image border

# Purposes mixed into the seed, so parameter and noise streams never coincide.
_PARAMS, _NOISE = 0, 1
# Domain code for parameters shared by both domains of a paired set.
_SHARED = len(DOMAINS)


def stable_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed without Python's (salted) hash().

    numpy's SeedSequence spreads every input bit over the output, so nearby tuples such as
    (seed, epoch) and (seed, epoch + 1) give unrelated streams. Negative parts are taken
    modulo 2**64. The result fits torch.Generator.manual_seed and numpy.random.default_rng.
    """
    entropy = [int(p) % (1 << 64) for p in parts]
    words = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


@dataclass(frozen=True)
class ShapeMeta:
    """What was drawn for one image; coordinates are pixels, x = column, y = row."""

    shape: str  # "circle" or "square"
    center: tuple[float, float]  # (cx, cy)
    radius: float  # circle radius, or half the side of the square
    fg_color: tuple[float, float, float]  # shape colour, RGB in [-1, 1]
    bg_color: tuple[float, float, float]  # background colour, RGB in [-1, 1]

    def bounding_square(self, size: int) -> torch.Tensor:
        """(size, size) bool: pixels whose centre lies in the square of half-side `radius`."""
        dx, dy = offsets(size, self.center)  # (1, size), (size, 1)
        inside = (np.abs(dx) <= self.radius) & (np.abs(dy) <= self.radius)  # (size, size)
        return torch.from_numpy(inside)

    def coverage(self, size: int) -> np.ndarray:
        """(size, size) float64 in [0, 1]: the shape's one-pixel anti-aliased coverage.

        The distance is Euclidean for circles and Chebyshev for squares, so the square of half-side
        r and the circle of radius r share the same soft-edge profile across their boundary.
        """
        dx, dy = offsets(size, self.center)
        if self.shape == "circle":
            dist = np.sqrt(dx * dx + dy * dy)
        elif self.shape == "square":
            dist = np.maximum(np.abs(dx), np.abs(dy))
        else:
            raise ValueError(f"unknown shape {self.shape!r}; known: circle, square")
        return np.clip(self.radius - dist + 0.5, 0.0, 1.0)

    def render(self, size: int) -> np.ndarray:
        """(3, size, size) float64: the noise-free image, bg + coverage * (fg - bg)."""
        cov = self.coverage(size)[None]  # (1, size, size)
        fg = np.asarray(self.fg_color, dtype=np.float64)[:, None, None]  # (3, 1, 1)
        bg = np.asarray(self.bg_color, dtype=np.float64)[:, None, None]
        return bg + cov * (fg - bg)


def check_settings(size: int, split: str, length: int, noise: float) -> None:
    """ValueError for settings no synthetic set can take (shared by every generator here)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if size < MIN_SIZE:
        raise ValueError(f"synthetic images need size >= {MIN_SIZE}, got {size}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and must be >= 0, got {noise}")


def offsets(size: int, center: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from `center`: dx (1, size) over columns, dy (size, 1) over rows."""
    coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres sit at index + 0.5
    return (coords - center[0])[None, :], (coords - center[1])[:, None]


def _draw_colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """fg, bg (3,): a light shape on a dark background, each channel uniform in its range,
    resampled until they are >= MIN_COLOR_DISTANCE apart."""
    # Most pairs pass, so 1000 tries failing is impossible in practice.
    for _ in range(1000):
        fg, bg = rng.uniform(*FG_RANGE, size=3), rng.uniform(*BG_RANGE, size=3)
        if np.linalg.norm(fg - bg) >= MIN_COLOR_DISTANCE:
            return fg, bg
    raise AssertionError("colour rejection sampling did not terminate")


def _draw_geometry(rng: np.random.Generator, size: int) -> tuple[tuple[float, float], float]:
    """Centre and radius such that the shape, soft edge included, stays EDGE_MARGIN inside."""
    radius = float(rng.uniform(*RADIUS_RANGE)) * size
    # cx - r >= margin puts the centre of column 0 at distance >= r + 0.5: zero coverage.
    low, high = radius + EDGE_MARGIN, size - radius - EDGE_MARGIN
    cx, cy = rng.uniform(low, high, size=2)
    return (float(cx), float(cy)), radius


class SyntheticShapes:
    """Circles (domain A) and squares (domain B); images are (3, size, size) float32 in [-1, 1]."""

    def __init__(
        self,
        task: str = "circle2square",
        size: int = 64,
        split: str = "train",
        paired: bool = False,
        seed: int = 0,
        length: int = 1000,
        noise: float = 0.04,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
        check_settings(size, split, length, noise)
        self.task, self.size, self.split = task, int(size), split
        self.paired, self.seed, self.length = bool(paired), int(seed), int(length)
        self.noise = float(noise)

    def __len__(self) -> int:
        return self.length

    def shape_of(self, domain: str) -> str:
        """The shape drawn in `domain` ("A" or "B"): "circle" or "square"."""
        return TASKS[self.task][self._domain_code(domain)]

    def meta(self, domain: str, index: int) -> ShapeMeta:
        """The parameters of image `index` of `domain`, without rendering it."""
        code = self._domain_code(domain)
        self._check_index(index)
        # Paired sets share one parameter stream between A and B; unpaired ones draw per domain.
        param_domain = _SHARED if self.paired else code
        rng = np.random.default_rng(self._seed(param_domain, index, _PARAMS))
        center, radius = _draw_geometry(rng, self.size)
        fg, bg = _draw_colors(rng)
        return ShapeMeta(
            shape=TASKS[self.task][code],
            center=center,
            radius=radius,
            fg_color=tuple(float(v) for v in fg),
            bg_color=tuple(float(v) for v in bg),
        )

    def sample(self, domain: str, index: int) -> tuple[torch.Tensor, ShapeMeta]:
        """Image `index` of `domain`: (3, size, size) float32 in [-1, 1], and its ShapeMeta."""
        meta = self.meta(domain, index)
        image = meta.render(self.size)  # (3, S, S) float64
        if self.noise > 0:
            # Noise is per domain even for paired sets: A and B carry independent noise.
            rng = np.random.default_rng(self._seed(self._domain_code(domain), index, _NOISE))
            image = image + rng.normal(0.0, self.noise, size=image.shape)
        image = np.clip(image, -1.0, 1.0)
        return torch.from_numpy(image.astype(np.float32)), meta

    def describe(self) -> dict:
        """JSON-able description, enough to rebuild this dataset."""
        return {
            "kind": "synthetic",
            "task": self.task,
            "size": self.size,
            "split": self.split,
            "paired": self.paired,
            "seed": self.seed,
            "length": self.length,
            "noise": self.noise,
        }

    def _seed(self, domain_code: int, index: int, purpose: int) -> int:
        task_code = list(TASKS).index(self.task)
        split_code = SPLITS.index(self.split)
        return stable_seed(
            self.seed, task_code, self.size, split_code, int(self.paired), domain_code, index,
            purpose,
        )

    def _domain_code(self, domain: str) -> int:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
        return DOMAINS.index(domain)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic images")
