"""Discriminators used in training: PatchGAN (reference `basic`/`n_layers`), DCGAN-64 and LOMIT's
classifying critic. A recipe whose reference has a discriminator of its own builds it in its
own recipe file (i2i/train/), from these where it can."""

from __future__ import annotations

from torch import nn

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
    """n_layers=3 is the 70x70 PatchGAN: (N, C, 256, 256) -> (N, 1, 30, 30) logits."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance"):
        super().__init__()
        use_bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=use_bias), _norm(norm, out),
                       nn.LeakyReLU(0.2)]
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
