"""CUT (Contrastive Unpaired Translation, Park et al. 2020): the CycleGAN ResNet generator with
anti-aliased sampling; its tanh output is the translated image. FastCUT is a way of training
it (i2i.train.cut), not another architecture.

Anti-aliased sampling, as the published code builds it (models/networks.py of
taesungp/contrastive-unpaired-translation, no_antialias and no_antialias_up off):
    down  conv3 stride 1 (zero pad 1) -> instance norm -> ReLU -> blur-then-stride-2: a
          depthwise 3x3 filter, the outer product of [1, 2, 1] divided by its sum 16, on a
          reflect pad of 1, every second pixel kept
    up    zero-insert-then-blur x2: a depthwise transposed conv with the outer product of
          [1, 3, 3, 1] divided by its sum 64 and multiplied by 4 (= stride^2: three of every four
          pixels of the zero-inserted image are zeros, so x4 keeps a flat image at its level),
          on a replicate pad of 1, cropped to 2H x 2W -> conv3 stride 1 (zero pad 1) -> instance
          norm -> ReLU
The blur filters are fixed: non-persistent buffers, so they move with the module (.to, .double)
and export as constants, and a checkpoint holds only what was learned.

The conv + norm + ReLU steps are `ConvNormReLU`s and the residual blocks `ResidualBlock`s of
i2i.models.resnet, so i2i.kernels.fuse swaps their instance norms for the fused kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ConvNormReLU, ResidualBlock
from .spec import ModelSpec, image_spec

# The reference's nce_layers 0,4,8,12,16 index its nn.Sequential; with anti-aliasing on that is
#     0  ReflectionPad2d(3)        -> the reflect-padded input      (N, C, H+6, W+6)
#     1-3  stem conv7, IN, ReLU
#     4  Conv2d of the first down  -> its output, before the norm   (N, 2 ngf, H, W)
#     5-7  IN, ReLU, Downsample
#     8  Conv2d of the second down -> its output, before the norm   (N, 4 ngf, H/2, W/2)
#     9-11 IN, ReLU, Downsample
#     12 + i  residual block i     -> 12: block 0, 16: block 4      (N, 4 ngf, H/4, W/4)
# In i2i's named modules: stem.pad, down[0].step.conv, down[1].step.conv, blocks[0], blocks[4].
# With fewer than 5 blocks index 16 would fall into the upsampling layers of the reference; i2i
# takes the last block instead (and no block at all when there is none).
NCE_BLOCKS = (0, 4)


def blur_filter(taps: tuple[float, ...], channels: int, gain: float = 1.0) -> torch.Tensor:
    """(channels, 1, k, k): the outer product of `taps` with itself, summing to `gain`, once per
    channel (a depthwise conv's weight)."""
    row = torch.tensor(taps, dtype=torch.float32)
    square = row[:, None] * row[None, :]
    return (square * (gain / square.sum())).expand(channels, 1, *square.shape).contiguous()


class BlurDown(nn.Module):
    """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)): [1, 2, 1] blur on a reflect pad, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filter", blur_filter((1.0, 2.0, 1.0), channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filter, stride=2,
                        groups=x.shape[1])


class BlurUp(nn.Module):
    """(N, C, H, W) -> (N, C, 2H, 2W): zeros inserted between pixels, then the [1, 3, 3, 1]
    blur with gain 4 (a stride-2 transposed conv) on a replicate pad of 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filter", blur_filter((1.0, 3.0, 3.0, 1.0), channels, gain=4.0),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")                # (N, C, H+2, W+2)
        up = F.conv_transpose2d(padded, self.filter, stride=2, padding=2,
                                groups=x.shape[1])                       # (N, C, 2H+2, 2W+2)
        return up[:, :, 1:-1, 1:-1]


class AntialiasedDown(nn.Module):
    """conv3 s1 + norm + ReLU at full size, then BlurDown: (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.step = ConvNormReLU(cin, cout, 3)
        self.blur = BlurDown(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.step(x))


class AntialiasedUp(nn.Module):
    """BlurUp, then conv3 s1 + norm + ReLU: (N, cin, H, W) -> (N, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.blur = BlurUp(cin)
        self.step = ConvNormReLU(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(self.blur(x))


class CUTGenerator(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W) in [-1, 1]; H and W multiples of 4."""

    size_multiple = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 9):
        super().__init__()
        self.stem = ConvNormReLU(in_channels, ngf, 7, reflect=3)
        self.down = nn.ModuleList([AntialiasedDown(ngf, ngf * 2),
                                   AntialiasedDown(ngf * 2, ngf * 4)])
        self.blocks = nn.ModuleList([ResidualBlock(ngf * 4) for _ in range(n_blocks)])
        self.up = nn.ModuleList([AntialiasedUp(ngf * 4, ngf * 2), AntialiasedUp(ngf * 2, ngf)])
        self.head_pad = nn.ReflectionPad2d(3)
        self.head = nn.Conv2d(ngf, out_channels, 7)
        # Residual blocks whose outputs PatchNCE reads (see NCE_BLOCKS), in order, no repeats.
        self.nce_blocks = tuple(sorted({min(b, n_blocks - 1) for b in NCE_BLOCKS})) \
            if n_blocks else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)                      # (N, ngf, H, W)
        for layer in self.down:
            h = layer(h)                      # ends at (N, 4 ngf, H/4, W/4)
        for block in self.blocks:
            h = block(h)
        for layer in self.up:
            h = layer(h)                      # back to (N, ngf, H, W)
        return torch.tanh(self.head(self.head_pad(h)))

    def nce_channels(self) -> list[int]:
        """Channels of each feature nce_features returns, in order."""
        ngf = self.stem.conv.out_channels
        return [self.stem.conv.in_channels, 2 * ngf, 4 * ngf] + [4 * ngf] * len(self.nce_blocks)

    def nce_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder features PatchNCE compares (the reference's nce_layers, mapped above):
        the padded input, each downsampling conv's output before its norm, and the outputs of
        the residual blocks in nce_blocks. Runs only as far as the last of them."""
        padded = self.stem.pad(x)                                  # (N, C, H+6, W+6)
        feats = [padded]
        h = self.stem.act(self.stem.norm(self.stem.conv(padded)))
        for layer in self.down:
            step = layer.step
            conv = step.conv(step.pad(h))                          # before the norm
            feats.append(conv)
            h = layer.blur(step.act(step.norm(conv)))
        for index in range(self.nce_blocks[-1] + 1 if self.nce_blocks else 0):
            h = self.blocks[index](h)
            if index in self.nce_blocks:
                feats.append(h)
        return feats


@dataclass(frozen=True)
class CUTConfig:
    ngf: int = 64
    n_blocks: int = 9
    channels: int = 3                   # input and output channels


class CUTTranslator(nn.Module):
    def __init__(self, config: CUTConfig):
        super().__init__()
        self.config = config
        self.generator = CUTGenerator(config.channels, config.channels, config.ngf,
                                      config.n_blocks)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"translation": self.generator(image)}


def cut_signatures(config: CUTConfig) -> dict[str, ModelSpec]:
    return {"default": ModelSpec((image_spec("image", config.channels),),
                                 (image_spec("translation", config.channels),),
                                 CUTGenerator.size_multiple, config.channels)}
