"""pix2pix: the U-Net generator (unet_256 = depth 8, unet_128 = depth 7, any depth >= 2).

Training uses BatchNorm with batch statistics, as the reference does. At inference every sample is
normalised by default with its own statistics and BatchNorm's affine: that is exactly what the
reference's batch-1 test script computes (train-mode BN at batch 1), and it keeps results
independent of how a runtime batches requests (batched train-mode BN would not). A model set to
`running_stats` uses BatchNorm's running statistics instead, as the reference's `--eval` does.
`norm` takes the reference's other choices, instance and none (i2i.models.norms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .norms import conv_bias, norm_layer
from .spec import ModelSpec, image_spec

PRESETS = {"unet_256": 8, "unet_128": 7}


@dataclass(frozen=True)
class Pix2PixConfig:
    depth: int = 8                  # number of stride-2 downsamplings; H, W multiples of 2**depth
    ngf: int = 64
    channels: int = 3
    dropout: bool = True            # 0.5 dropout in the inner up blocks (training only by default)
    norm: str = "batch"             # batch | instance | none (i2i.models.norms)
    running_stats: bool = False     # batch norm: running statistics at inference (--eval)
    out_channels: int | None = None  # the reference's output_nc; None: as many as the input

    @property
    def output_channels(self) -> int:
        return self.channels if self.out_channels is None else self.out_channels


def _down(cin: int, cout: int, norm: str, normed: bool, act: bool,
          running: bool) -> nn.Sequential:
    """Conv (with a bias per the model's norm, as the reference), then its norm where `normed`
    (every level but the outermost and innermost)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1,
                                         bias=conv_bias(norm))]
    if normed:
        layers.append(norm_layer(norm, cout, running))
    if act:
        # The reference applies this LeakyReLU in place at the start of the next level, so the
        # skip connection carries the activated tensor; applying it here is the same computation.
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, outermost: bool, dropout: bool, norm: str,
        running: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReLU(),
                               nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1,
                                                  bias=outermost or conv_bias(norm))]
    layers.append(nn.Tanh() if outermost else norm_layer(norm, cout, running))
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


class UnetGenerator(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W) in [-1, 1]; H and W multiples of 2**depth."""

    def __init__(self, config: Pix2PixConfig):
        super().__init__()
        if config.depth < 2:
            raise ValueError(f"pix2pix depth must be at least 2, got {config.depth}")
        d, ngf, c = config.depth, config.ngf, config.channels
        n = {"norm": config.norm, "running": config.running_stats}
        inner = [ngf * min(2 ** i, 8) for i in range(d)]      # channels after down i
        self.down = nn.ModuleList(
            [_down(c if i == 0 else inner[i - 1], inner[i], normed=0 < i < d - 1,
                   act=i < d - 1, **n)
             for i in range(d)])
        self.up = nn.ModuleList(
            [_up(inner[i] if i == d - 1 else 2 * inner[i],
                 config.output_channels if i == 0 else inner[i - 1],
                 outermost=i == 0, dropout=config.dropout and 4 <= i < d - 1, **n)
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
    return {"default": ModelSpec((image_spec("image", config.channels),),
                                 (image_spec("translation", config.output_channels),),
                                 2 ** config.depth, config.channels)}
