"""Discriminators used in training: PatchGAN (reference `basic`/`n_layers`, optionally with
CUT's anti-aliased downsampling), DCGAN-64, LOMIT's classifying critic and UNIT's multi-scale
discriminator."""

from __future__ import annotations

import torch
from torch import nn

from .cut import BlurDown
from .norms import SampleNorm


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":     # eval-mode BatchNorm; a SampleNorm so that data parallel syncs it
        return SampleNorm(channels, running=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; known: instance, batch, none")


class PatchGAN(nn.Module):
    """n_layers=3 is the 70x70 PatchGAN: (N, C, 256, 256) -> (N, 1, 30, 30) logits.

    antialias: each stride-2 conv becomes a stride-1 conv, its norm and LeakyReLU, then the
    [1, 2, 1] blur-then-stride-2 (CUT's reference discriminator): (N, C, 256, 256) ->
    (N, 1, 30, 30) as well."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance", antialias: bool = False):
        super().__init__()
        use_bias = norm != "batch"
        first = 1 if antialias else 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, first, 1), nn.LeakyReLU(0.2)]
        layers += [BlurDown(ndf)] if antialias else []
        channels = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            blur = antialias and i < n_layers
            stride = 2 if i < n_layers and not antialias else 1
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=use_bias), _norm(norm, out),
                       nn.LeakyReLU(0.2)]
            layers += [BlurDown(out)] if blur else []
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.n_layers = n_layers

    def forward(self, x):
        return self.net(x)

    def last_norm_side(self, size: int) -> int:
        """Side of the maps the last norm layer sees for size x size inputs: each 4x4 conv of
        stride 2 (padding 1) halves it, the stride-1 one takes one off."""
        side = size // 2
        for i in range(1, self.n_layers + 1):
            side = side // 2 if i < self.n_layers else side - 1
        return side


class DCGAN64(nn.Module):
    """DCGAN discriminator for 64x64 images: (N, C, 64, 64) -> (N, 1, 1, 1) logits."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = ndf
        for _ in range(3):                                   # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=norm != "batch"),
                       _norm(norm, channels * 2), nn.LeakyReLU(0.2)]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0))       # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if x.shape[-2:] != (64, 64):
            raise ValueError(f"DCGAN64 takes 64x64 images, got {tuple(x.shape[-2:])}; "
                             "use the PatchGAN discriminator for other sizes")
        return self.net(x)


class ClassifyingCritic(nn.Module):
    """StarGAN-style critic with an auxiliary domain classifier (LOMIT's discriminator).

    `layers` conv4 s2 layers (ndf, 2 ndf, ... at most 32 ndf), LeakyReLU 0.01, no norm (the
    gradient penalty is per sample). Two heads on the shared trunk: `source` (conv3, one
    real/fake score per patch) and `classes` (a conv over the whole remaining map, one logit
    per attribute). forward(x) -> (scores (N, 1, h, w), logits (N, n_labels)).
    reflect, head_bias: LOMIT's reference code pads every conv by reflection and gives the two
    heads biases; the defaults are zero padding and bias-free heads.
    """

    def __init__(self, size: int, n_labels: int, in_channels: int = 3, ndf: int = 64,
                 layers: int = 6, reflect: bool = False, head_bias: bool = False):
        super().__init__()
        if layers < 1 or size % (2 ** layers):
            raise ValueError(f"the critic's {layers} halvings need a size divisible by "
                             f"{2 ** layers}, got {size}")
        trunk: list[nn.Module] = []
        channels = in_channels
        padding_mode = "reflect" if reflect else "zeros"
        for i in range(layers):
            out = ndf * min(2 ** i, 32)
            trunk += [nn.Conv2d(channels, out, 4, 2, 1, padding_mode=padding_mode),
                      nn.LeakyReLU(0.01)]
            channels = out
        self.trunk = nn.Sequential(*trunk)
        self.source = nn.Conv2d(channels, 1, 3, 1, 1, bias=head_bias, padding_mode=padding_mode)
        self.classes = nn.Conv2d(channels, n_labels, size // 2 ** layers, bias=head_bias)
        self.size = size

    def forward(self, x):
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"this critic was built for {self.size}x{self.size} images, got "
                             f"{tuple(x.shape[-2:])}")
        h = self.trunk(x)
        return self.source(h), self.classes(h).flatten(1)


class MultiScaleDiscriminator(nn.Module):
    """UNIT's discriminator (the public code's MsImageDis): the same plain conv net at `scales`
    resolutions, each an average-pooled half of the previous one.

    Per scale: `layers` x (reflect pad 1, conv4 stride 2, LeakyReLU 0.2), widths ndf, 2 ndf, ...,
    no norm, then a 1x1 conv to one score per patch. Between scales: 3x3 average pooling, stride
    2, padding 1, the padding left out of the average. forward(x) -> a list of `scales` score
    maps, (N, 1, H / 2^(s + layers), ...) for scale s.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 4, scales: int = 3):
        super().__init__()
        self.scales = nn.ModuleList([self._net(in_channels, ndf, layers) for _ in range(scales)])
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    @staticmethod
    def _net(in_channels: int, ndf: int, layers: int) -> nn.Sequential:
        body: list[nn.Module] = []
        channels, out = in_channels, ndf
        for _ in range(layers):
            body += [nn.Conv2d(channels, out, 4, 2, 1, padding_mode="reflect"),
                     nn.LeakyReLU(0.2)]
            channels, out = out, out * 2
        return nn.Sequential(*body, nn.Conv2d(channels, 1, 1))

    @staticmethod
    def smallest(layers: int, scales: int) -> int:
        """The smallest H and W it takes: every conv's input at least 2 pixels (reflect pad)."""
        return 2 ** (layers + scales - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        scores = []
        for index, net in enumerate(self.scales):
            if index:
                x = self.pool(x)
            scores.append(net(x))
        return scores
