"""CycleGAN: the ResNet generator whose tanh output is the translated image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ResnetGenerator
from .spec import ModelSpec, image_spec


@dataclass(frozen=True)
class CycleGANConfig:
    ngf: int = 64
    n_blocks: int = 9
    channels: int = 3
    dropout: bool = False


class CycleGANTranslator(nn.Module):
    def __init__(self, config: CycleGANConfig):
        super().__init__()
        self.config = config
        self.generator = ResnetGenerator(config.channels, config.channels, config.ngf,
                                         config.n_blocks, config.dropout)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"translation": self.generator(image)}


def cyclegan_signatures(config: CycleGANConfig) -> dict[str, ModelSpec]:
    c = config.channels
    return {"default": ModelSpec((image_spec("image", c),), (image_spec("translation", c),),
                                 ResnetGenerator.size_multiple, c)}
