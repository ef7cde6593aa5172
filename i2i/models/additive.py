"""The additive-mask translator: y = clamp(x + strength * m, -1, 1), m = tanh(G(x)).

Seed 000 ("Unsupervised Image to Image Translation With Additional Mask"): the ResNet generator's
tanh output is a mask added to the input; an L1 penalty on the mask (lambda_r) sets its area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ResnetGenerator
from .spec import ModelSpec, image_spec


@dataclass(frozen=True)
class AdditiveConfig:
    ngf: int = 64
    n_blocks: int = 9
    channels: int = 3
    dropout: bool = False
    strength: float = 1.0           # inference-time mask scale; 0 returns the input


class AddMask(nn.Module):
    """(image, logits) -> (clamp(image + strength * tanh(logits), -1, 1), tanh(logits)).

    A module of its own so that i2i.kernels.use_fused_kernels can swap in the one-pass kernel.
    """

    def forward(self, image: torch.Tensor, logits: torch.Tensor, strength: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tanh(logits)
        return torch.clamp(image + strength * m, -1.0, 1.0), m


class AdditiveTranslator(nn.Module):
    def __init__(self, config: AdditiveConfig):
        super().__init__()
        self.config = config
        self.strength = config.strength
        self.generator = ResnetGenerator(config.channels, config.channels, config.ngf,
                                         config.n_blocks, config.dropout)
        self.add_mask = AddMask()

    def mask(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(image)                     # (N, C, H, W) in [-1, 1]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        translation, m = self.add_mask(image, self.generator.logits(image), self.strength)
        return {"translation": translation, "mask": m}


def additive_spec(config: AdditiveConfig) -> ModelSpec:
    c = config.channels
    return ModelSpec(inputs=(image_spec("image", c),),
                     outputs=(image_spec("translation", c), image_spec("mask", c)),
                     size_multiple=ResnetGenerator.size_multiple, channels=c)
