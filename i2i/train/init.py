"""Weight initialisation of the networks a recipe trains (--init-type, --init-gain).

The CycleGAN/pix2pix and Mask CycleGAN reference code initialise every convolution and linear
layer from N(0, 0.02) with zero bias, and BatchNorm scales from N(1, 0.02) with zero shift,
before training; "default" keeps PyTorch's own per-layer initialisation. Each network draws
from its own generator seeded from (seed, its name), so a network's starting weights do not
depend on which other networks the recipe builds or in which order.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from ..data.shapes import stable_seed

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal", "default")


def check_init(kind: str, gain: float) -> None:
    """ValueError for an unknown --init-type or a gain that is not positive."""
    if kind not in INIT_TYPES:
        raise ValueError(f"unknown --init-type {kind!r}; known: {', '.join(INIT_TYPES)}")
    if not gain > 0:
        raise ValueError(f"--init-gain must be positive, got {gain}")


def init_networks(nets: dict[str, nn.Module], kind: str, gain: float, seed: int) -> None:
    """Initialise every network in `nets` in place; "default" leaves them as built."""
    check_init(kind, gain)
    if kind == "default":
        return
    for name, net in nets.items():
        generator = torch.Generator().manual_seed(stable_seed(seed, zlib.crc32(name.encode())))
        for module in net.modules():
            _init_module(module, kind, gain, generator)


@torch.no_grad()
def _init_module(module: nn.Module, kind: str, gain: float, generator: torch.Generator) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        module.weight.normal_(1.0, gain, generator=generator)
        module.bias.zero_()
    elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        weight = module.weight
        if kind == "normal":
            weight.normal_(0.0, gain, generator=generator)
        elif kind == "xavier":
            nn.init.xavier_normal_(weight, gain=gain, generator=generator)
        elif kind == "kaiming":          # the reference's a=0, fan_in: gain is not used
            nn.init.kaiming_normal_(weight, a=0, mode="fan_in", generator=generator)
        else:
            nn.init.orthogonal_(weight, gain=gain, generator=generator)
        if module.bias is not None:
            module.bias.zero_()
