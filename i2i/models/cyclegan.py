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
    channels: int = 3                   # input channels (the reference's input_nc)
    dropout: bool = False
    norm: str = "instance"              # instance | batch | none (i2i.models.norms)
    running_stats: bool = False         # batch norm: running statistics at inference (--eval)
    out_channels: int | None = None     # the reference's output_nc; None: as many as the input

    @property
    def output_channels(self) -> int:
        return self.channels if self.out_channels is None else self.out_channels


class CycleGANTranslator(nn.Module):
    def __init__(self, config: CycleGANConfig):
        super().__init__()
        self.config = config
        self.generator = ResnetGenerator(config.channels, config.output_channels, config.ngf,
                                         config.n_blocks, config.dropout, config.norm,
                                         config.running_stats)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"translation": self.generator(image)}


def cyclegan_signatures(config: CycleGANConfig) -> dict[str, ModelSpec]:
    return {"default": ModelSpec((image_spec("image", config.channels),),
                                 (image_spec("translation", config.output_channels),),
                                 ResnetGenerator.size_multiple, config.channels)}
