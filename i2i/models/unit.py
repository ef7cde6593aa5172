"""UNIT (Liu, Breuel, Kautz 2017): a pair of VAE-GANs sharing one latent space.

Each domain has an encoder E (image -> latent code z at H/4) and a decoder G (z -> image).
Translating A -> B is G_B(E_A(x)); B -> A is G_A(E_B(y)). Training (i2i.train.unit) adds
unit-variance noise to z; inference decodes the code itself (the VAE's mean), as the public
code's test script does, so one input always gives one output.

An inference module holds one direction: the A -> B checkpoint holds E_A and G_B, the B -> A
checkpoint E_B and G_A, so the two run files of a cycle run serve the two directions.

The networks are those of NVIDIA's public code (networks.py VAEGen: ContentEncoder, Decoder):
    encoder  c7s1-64 (IN, ReLU) -> n_downsample x (conv4 stride 2, IN, ReLU) -> n_res x R
    decoder  n_res x R -> n_downsample x (nearest x2, conv5, LN, ReLU) -> c7s1-C, tanh
with reflect padding throughout, biases on every conv, R = resnet.ResidualBlock (IN), and LN a
per-sample norm over C*H*W with a per-channel scale and shift (GroupNorm with one group). The
encoder's steps are the ResNet generator's modules, so i2i.kernels.use_fused_kernels fuses
them; the decoder's LN steps stay eager.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ConvNormReLU, ResidualBlock
from .spec import ModelSpec, image_spec


@dataclass(frozen=True)
class UnitConfig:
    ngf: int = 64               # the code's gen.dim: width of the first layer
    n_downsample: int = 2       # stride-2 convs in the encoder, upsamplings in the decoder
    n_res: int = 4              # residual blocks in the encoder and in the decoder
    channels: int = 3

    def __post_init__(self) -> None:
        if self.n_downsample < 1:
            raise ValueError(f"UnitConfig.n_downsample must be at least 1, got "
                             f"{self.n_downsample}")

    @property
    def latent_channels(self) -> int:
        return self.ngf * 2 ** self.n_downsample


class UnitEncoder(nn.Module):
    """(N, C, H, W) -> latent code (N, ngf 2^d, H / 2^d, W / 2^d), d = n_downsample."""

    def __init__(self, config: UnitConfig):
        super().__init__()
        ngf, d = config.ngf, config.n_downsample
        self.stem = ConvNormReLU(config.channels, ngf, 7, reflect=3)
        # conv4 stride 2 after a reflect pad of 1 halves H and W exactly.
        self.down = nn.ModuleList([ConvNormReLU(ngf * 2 ** i, ngf * 2 ** (i + 1), 4, stride=2,
                                                reflect=1) for i in range(d)])
        self.blocks = nn.ModuleList([ResidualBlock(config.latent_channels)
                                     for _ in range(config.n_res)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for layer in [*self.down, *self.blocks]:
            h = layer(h)
        return h


class UpsampleConvLN(nn.Module):
    """(N, cin, h, w) -> (N, cout, 2h, 2w): nearest x2, reflect pad 2, conv5, LN, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad = nn.ReflectionPad2d(2)
        self.conv = nn.Conv2d(cin, cout, 5)
        # LN: statistics over the whole (C, H, W) of each sample, so batching changes nothing;
        # GroupNorm(1, C) exports as InstanceNormalization on a reshape, which the fp16 graph
        # keeps in fp32.
        self.norm = nn.GroupNorm(1, cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.pad(self.up(x)))))


class UnitDecoder(nn.Module):
    """latent code (N, ngf 2^d, H / 2^d, W / 2^d) -> (N, C, H, W) in [-1, 1]."""

    def __init__(self, config: UnitConfig):
        super().__init__()
        width = config.latent_channels
        self.blocks = nn.ModuleList([ResidualBlock(width) for _ in range(config.n_res)])
        self.up = nn.ModuleList([UpsampleConvLN(width // 2 ** i, width // 2 ** (i + 1))
                                 for i in range(config.n_downsample)])
        self.head_pad = nn.ReflectionPad2d(3)
        self.head = nn.Conv2d(config.ngf, config.channels, 7)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in [*self.blocks, *self.up]:
            h = layer(h)                      # ends at (N, ngf, H, W)
        return torch.tanh(self.head(self.head_pad(h)))


class UnitTranslator(nn.Module):
    """One direction of UNIT: the source domain's encoder and the target domain's decoder."""

    def __init__(self, config: UnitConfig):
        super().__init__()
        self.config = config
        self.encoder = UnitEncoder(config)
        self.decoder = UnitDecoder(config)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `default` signature: the latent code decoded without noise."""
        return {"translation": self.decoder(self.encoder(image))}

    def sample(self, image: torch.Tensor, seed: int, scale: float = 1.0
               ) -> dict[str, torch.Tensor]:
        """The translation of a latent code with noise added, as training draws it (eager only,
        no signature): N(0, scale^2) noise from `seed`, one draw of (1, C, h, w) shared by every
        row, so a row's result depends on its image and the seed alone, not on its batch."""
        z = self.encoder(image)                                   # (N, C, h, w)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, *z.shape[1:]), generator=generator)
        return {"translation": self.decoder(z + scale * noise.to(z.device, z.dtype))}


def unit_signatures(config: UnitConfig) -> dict[str, ModelSpec]:
    multiple = 2 ** config.n_downsample
    # The residual blocks reflect-pad the code by 1: it must be at least 2 x 2.
    return {"default": ModelSpec((image_spec("image", config.channels),),
                                 (image_spec("translation", config.channels),),
                                 multiple, config.channels, min_size=2 * multiple)}
