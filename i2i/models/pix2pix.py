"""pix2pix: the U-Net generator (unet_256 = depth 8, unet_128 = depth 7, any depth >= 2).

Training uses BatchNorm with batch statistics, as the reference does. At inference every sample is
normalised with its own statistics and BatchNorm's affine: that is exactly what the reference's
batch-1 test script computes (train-mode BN at batch 1), and it keeps results independent of how a
runtime batches requests. Naive eval-mode BN (running stats) or batched train-mode BN both change
the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ModelSpec, image_spec

PRESETS = {"unet_256": 8, "unet_128": 7}


@dataclass(frozen=True)
class Pix2PixConfig:
    depth: int = 8                  # number of stride-2 downsamplings; H, W multiples of 2**depth
    ngf: int = 64
    channels: int = 3
    dropout: bool = True            # 0.5 dropout in the inner up blocks (training only by default)


class SampleNorm(nn.BatchNorm2d):
    """BatchNorm in training; per-sample statistics with BN's affine at inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def _down(cin: int, cout: int, norm: bool, act: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)]
    if norm:
        layers.append(SampleNorm(cout))
    if act:
        # The reference applies this LeakyReLU in place at the start of the next level, so the
        # skip connection carries the activated tensor; applying it here is the same computation.
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, outermost: bool, dropout: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReLU(),
                               nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1,
                                                  bias=outermost)]
    layers.append(nn.Tanh() if outermost else SampleNorm(cout))
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


class UnetGenerator(nn.Module):
    """(N, C, H, W) -> (N, C, H, W) in [-1, 1]; H and W multiples of 2**depth."""

    def __init__(self, config: Pix2PixConfig):
        super().__init__()
        if config.depth < 2:
            raise ValueError(f"pix2pix depth must be at least 2, got {config.depth}")
        d, ngf, c = config.depth, config.ngf, config.channels
        inner = [ngf * min(2 ** i, 8) for i in range(d)]      # channels after down i
        self.down = nn.ModuleList(
            [_down(c if i == 0 else inner[i - 1], inner[i], norm=0 < i < d - 1, act=i < d - 1)
             for i in range(d)])
        self.up = nn.ModuleList(
            [_up(inner[i] if i == d - 1 else 2 * inner[i], c if i == 0 else inner[i - 1],
                 outermost=i == 0, dropout=config.dropout and 4 <= i < d - 1)
             for i in range(d)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for layer in self.down:
            skips.append(layer(skips[-1]))       # skips[i + 1]: (N, inner_i, H / 2**(i+1), ...)
        h = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            h = self.up[i](torch.cat([skips[i + 1], h], dim=1))
        return h


class Pix2PixTranslator(nn.Module):
    def __init__(self, config: Pix2PixConfig):
        super().__init__()
        self.config = config
        self.generator = UnetGenerator(config)

    def keep_dropout(self) -> Pix2PixTranslator:
        """Leave dropout on at inference (the reference's stochastic test-time behaviour)."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train()
        return self

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"translation": self.generator(image)}


def pix2pix_signatures(config: Pix2PixConfig) -> dict[str, ModelSpec]:
    c = config.channels
    return {"default": ModelSpec((image_spec("image", c),), (image_spec("translation", c),),
                                 2 ** config.depth, c)}
