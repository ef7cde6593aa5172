"""The additive-mask translator: y = clamp(x + strength * m, -1, 1), m = tanh(G(x)).

Seed 000 ("Unsupervised Image to Image Translation With Additional Mask"): the ResNet generator's
tanh output is a mask added to the input; an L1 penalty on the mask (lambda_r) sets its area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ResnetGenerator
from .spec import Composite, ModelSpec, image_spec, knob_spec, signed_mask_spec

MAX_STRENGTH = 4.0                  # the strength signature takes 0 <= strength <= this


@dataclass(frozen=True)
class AdditiveConfig:
    ngf: int = 64
    n_blocks: int = 9
    channels: int = 3
    dropout: bool = False
    strength: float = 1.0           # inference-time mask scale; 0 returns the input


class AddMask(nn.Module):
    """(image, logits) -> (clamp(image + strength * tanh(logits), -1, 1), tanh(logits)).

    strength: a float for every row, or an (N, 1) tensor, one per row. A module of its own so
    that i2i.kernels.use_fused_kernels can swap in the one-pass kernel.
    """

    def forward(self, image: torch.Tensor, logits: torch.Tensor,
                strength: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tanh(logits)
        if isinstance(strength, torch.Tensor):
            strength = strength.reshape(-1, 1, 1, 1).to(m.dtype)             # (N, 1, 1, 1)
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
        """The `default` signature: the config's strength for every image."""
        return self.with_strength(image, self.strength)

    def with_strength(self, image: torch.Tensor, strength: float | torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """The `strength` signature: image (N, C, H, W), strength (N, 1), one per image."""
        translation, m = self.add_mask(image, self.generator.logits(image), strength)
        return {"translation": translation, "mask": m}


def additive_signatures(config: AdditiveConfig) -> dict[str, ModelSpec]:
    c, multiple = config.channels, ResnetGenerator.size_multiple
    outputs = (image_spec("translation", c), signed_mask_spec("mask", c))
    image = image_spec("image", c)
    added = Composite("translation", "mask", "add")           # clamp(x + strength * mask)
    return {"default": ModelSpec((image,), outputs, multiple, c, composite=added),
            "strength": ModelSpec((image, knob_spec("strength", 0.0, MAX_STRENGTH)), outputs,
                                  multiple, c, method="with_strength", composite=added)}
