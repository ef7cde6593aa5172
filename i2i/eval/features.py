"""Feature networks for the distribution metrics, by name, and features of picture streams.

FEATURES = {"inception": the FID Inception-v3 (weights from the user), "tiny": a seeded random
conv net}. Both map (N, 3, H, W) pictures in [-1, 1] to (N, dim) features and resize every
picture to their own side first, one picture at a time, so pictures of any size batch together
and a feature never depends on which batch its picture was in.

Only "inception" with the standard weights gives numbers comparable with published FID, KID,
precision and recall; "tiny" exists so tests and quick runs need no download. Its numbers rank
models against each other on the same data at best.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..pixels import from_uint8
from .inception import load_inception, resized

INCEPTION_NEEDED = "FID needs the Inception weights: --inception PATH, see README"
TINY_NOTE = ("features from 'tiny', a seeded random conv net: these numbers are NOT comparable "
             "with published FID/KID/precision/recall; use --features inception --inception "
             "PATH for those")


class FeatureError(ValueError):
    """A feature network that cannot be built as asked."""


class TinyFeatures(nn.Module):
    """Pictures resized to 64 x 64 -> four stride-2 3x3 convs with ReLU (3 -> 16 -> 32 -> 64 ->
    128 channels, 4 x 4 at the end) -> the mean over positions: (N, 128). He-normal weights
    drawn from a generator seeded by `seed`, so every run builds the same net."""

    name = "tiny"
    size = 64
    dim = 128
    comparable = False

    def __init__(self, seed: int = 0):
        super().__init__()
        widths = [3, 16, 32, 64, self.dim]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1)
                                   for a, b in zip(widths, widths[1:], strict=False))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator)
                                  * (2 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resized(x, self.size)                                   # (N, 3, 64, 64)
        for conv in self.convs:
            x = torch.relu(conv(x))                                 # ... (N, 128, 4, 4)
        return x.mean(dim=(2, 3))                                   # (N, 128)


@dataclass(frozen=True)
class FeatureEntry:
    build: Callable[[Path | None], nn.Module]       # the weights file (when it needs one)
    about: str


    needs_weights: bool


FEATURES: dict[str, FeatureEntry] = {
    "inception": FeatureEntry(load_inception, "the FID Inception-v3 (pytorch-fid's weights "
                              "file): 2048-d pool_3 features, comparable with published "
                              "numbers", needs_weights=True),
    "tiny": FeatureEntry(lambda weights: TinyFeatures(), "a seeded random conv net, 128-d: for "
                         "tests and quick comparisons; NOT comparable with published numbers",
                         needs_weights=False),
}


def check_features(name: str, weights: str | Path | None) -> None:
    """That `name` is a feature network and gets weights exactly when it needs them (no file
    is read)."""
    entry = FEATURES.get(name)
    if entry is None:
        raise FeatureError(f"unknown feature network {name!r}; known: {', '.join(FEATURES)}")
    if entry.needs_weights and weights is None:
        raise FeatureError(INCEPTION_NEEDED)
    if not entry.needs_weights and weights is not None:
        raise FeatureError(f"--inception PATH gives the Inception's weights; {name!r} takes "
                           "none: leave out --inception, or use --features inception")


def add_feature_arguments(group, flag: str = "--features") -> None:
    """The feature network's two flags (argparse), as i2i-eval (`--features`) and
    i2i-train (`--eval-features`) take them; both left at None mean inception."""
    group.add_argument(flag, choices=list(FEATURES), default=None,
                       help="the feature network: inception (default; needs --inception) or "
                            "tiny, a seeded random net whose numbers are NOT comparable with "
                            "published FID/KID/precision/recall (tests, quick checks)")
    group.add_argument("--inception", default=None, metavar="PATH",
                       help="the FID Inception weights, pytorch-fid's "
                            "pt_inception-2015-12-05-6726825d.pth (README: nothing is "
                            "downloaded)")


def open_features(name: str, weights: str | Path | None = None) -> nn.Module:
    """The feature network `name` in eval mode (inception: with the weights file `weights`).
    The module has .name, .size (its input side), .dim and .comparable."""
    check_features(name, weights)
    # Layers initialise from torch's global generator before their weights are replaced:
    # building on a forked generator leaves the caller's draws (a training run's) unchanged.
    with torch.random.fork_rng(devices=[]):
        net = FEATURES[name].build(None if weights is None else Path(weights))
    return net.eval()


def describe(net: nn.Module) -> dict:
    """What a report says of the features it was measured with."""
    about = {"network": net.name, "dim": net.dim, "comparable": net.comparable}
    if not net.comparable:
        about["note"] = TINY_NOTE
    return about


class FeatureBatches:
    """Features of pictures given one at a time, run through `net` in batches of `batch_size`.

    result() gives (N, dim) float64, in the order the pictures were added.
    """

    def __init__(self, net: nn.Module, batch_size: int = 32, device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise ValueError(f"the feature batch size must be at least 1, got {batch_size}")
        self.net, self.batch_size, self.device = net, batch_size, torch.device(device)
        self.waiting: list[torch.Tensor] = []
        self.done: list[np.ndarray] = []

    def add(self, picture: torch.Tensor) -> None:
        """One (3, H, W) uint8 picture."""
        self.add_image(from_uint8(picture))

    def add_image(self, x: torch.Tensor) -> None:
        """One (3, H, W) float picture already in [-1, 1] (training's held-out images)."""
        self.waiting.append(resized(x.unsqueeze(0).to(self.device), self.net.size))  # (1,3,S,S)
        if len(self.waiting) == self.batch_size:
            self._run()

    @torch.no_grad()
    def _run(self) -> None:
        if self.waiting:
            out = self.net(torch.cat(self.waiting))                 # (B, dim)
            self.done.append(out.double().cpu().numpy())
            self.waiting = []

    def result(self) -> np.ndarray:
        self._run()
        if not self.done:
            return np.zeros((0, self.net.dim))
        return np.concatenate(self.done)


def features(net: nn.Module, pictures: Iterable[torch.Tensor], batch_size: int = 32
             ) -> np.ndarray:
    """(N, dim) float64 features of (3, H, W) uint8 pictures, on the net's device."""
    device = next(net.parameters()).device
    batches = FeatureBatches(net, batch_size, device)
    for picture in pictures:
        batches.add(picture)
    return batches.result()
