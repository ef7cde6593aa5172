"""The CycleGAN ResNet generator (c7s1-64, d128, d256, R256 x n, u128, u64, c7s1-3, tanh).

Used by `additive` (its tanh output is the mask) and `cyclegan` (its tanh output is the image).
The layout follows the reference architecture exactly, so reference weights map one to one
(see `i2i.models.reference`), but modules carry names instead of Sequential indices.
"""

from __future__ import annotations

import torch
from torch import nn

from .norms import conv_bias, norm_layer


class ConvNormReLU(nn.Module):
    """(reflect pad) -> conv or transposed conv -> norm (instance by default) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, reflect: int = 0,
                 transpose: bool = False, norm: str = "instance", running: bool = False):
        super().__init__()
        self.pad = nn.ReflectionPad2d(reflect) if reflect else nn.Identity()
        bias = conv_bias(norm)
        if transpose:
            # u-k: doubles H and W exactly (output_padding=1).
            self.conv = nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=1,
                                           output_padding=1, bias=bias)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0 if reflect else 1,
                                  bias=bias)
        self.norm = norm_layer(norm, cout, running)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.pad(x))))


class ResidualBlock(nn.Module):
    """R-k: x + IN(conv3(pad(dropout(ReLU(IN(conv3(pad(x))))))))."""

    def __init__(self, channels: int, dropout: bool = False, norm: str = "instance",
                 running: bool = False):
        super().__init__()
        bias = conv_bias(norm)
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3, bias=bias)
        self.norm1 = norm_layer(norm, channels, running)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(0.5) if dropout else nn.Identity()
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=bias)
        self.norm2 = norm_layer(norm, channels, running)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.act(self.norm1(self.conv1(self.pad1(x)))))
        return x + self.norm2(self.conv2(self.pad2(h)))


class ResnetGenerator(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W) in [-1, 1]; H and W multiples of 4.

    norm: instance (the reference's CycleGAN default), batch or none (i2i.models.norms);
    running: batch norm's running statistics at inference (the reference's --eval)."""

    size_multiple = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 9, dropout: bool = False, norm: str = "instance",
                 running: bool = False):
        super().__init__()
        n = {"norm": norm, "running": running}
        self.stem = ConvNormReLU(in_channels, ngf, 7, reflect=3, **n)
        self.down = nn.ModuleList([
            ConvNormReLU(ngf, ngf * 2, 3, stride=2, **n),
            ConvNormReLU(ngf * 2, ngf * 4, 3, stride=2, **n),
        ])
        self.blocks = nn.ModuleList([ResidualBlock(ngf * 4, dropout, **n)
                                     for _ in range(n_blocks)])
        self.up = nn.ModuleList([
            ConvNormReLU(ngf * 4, ngf * 2, 3, stride=2, transpose=True, **n),
            ConvNormReLU(ngf * 2, ngf, 3, stride=2, transpose=True, **n),
        ])
        self.head_pad = nn.ReflectionPad2d(3)
        self.head = nn.Conv2d(ngf, out_channels, 7)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output before its tanh: (N, out_channels, H, W)."""
        h = self.stem(x)                      # (N, ngf, H, W)
        for layer in self.down:
            h = layer(h)                      # ends at (N, 4 ngf, H/4, W/4)
        for block in self.blocks:
            h = block(h)
        for layer in self.up:
            h = layer(h)                      # back to (N, ngf, H, W)
        return self.head(self.head_pad(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.logits(x))
