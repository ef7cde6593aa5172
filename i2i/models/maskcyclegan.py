"""Mask CycleGAN: a CycleGAN generator told by a binary mask which pixels it may translate.

Seed 004 ("Mask CycleGAN: Unpaired Multi-modal Domain Translation with Interpretable Latent
Variable"). For an image x (N, C, H, W) and a mask m (N, 1, H, W), 1 = translate, 0 = keep:

    y = G(E_m(cat[x * m, m])) + E_c(cat[x * (1 - m), 1 - m])

G is the CycleGAN ResNet generator; E_m (2C -> C) and E_c (2C -> C) are 1x1 convolutions. G only
sees the masked pixels; the context path E_c carries the rest of the image past it. The context
term is added after G's tanh, so y is unbounded: forward() clamps it to [-1, 1] for inference,
raw() returns it unclamped for training losses.

An all-ones mask gives a CycleGAN generator (E_m passing x through and E_c = 0 make it exactly
one). An all-zeros mask is accepted and not special-cased: G's input is then the constant image
E_m(0) = E_m's bias, whatever x is, so y = E_c(cat[x, 1]) + G(bias image): a per-pixel affine
map of x plus one fixed image set by the weights alone (in exact arithmetic G's first instance
norm would erase the constant and leave tanh(G.head.bias); in float32 its rounding residue is
amplified by the later norms, so that image is not constant). The paper's masks are binary;
soft masks in [0, 1] are accepted too. Sampling masks for training: i2i.data.masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import ResnetGenerator
from .spec import Composite, ModelSpec, image_spec, mask_spec


@dataclass(frozen=True)
class MaskCycleGANConfig:
    ngf: int = 64
    n_blocks: int = 9
    channels: int = 3
    dropout: bool = False


def _tracing() -> bool:
    """True while torch.compile, torch.export, the ONNX exporter or torch.jit traces the module:
    a check that reads tensor values would become a data-dependent branch they cannot follow."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def check_mask(image: torch.Tensor, mask: torch.Tensor) -> None:
    """ValueError unless mask is (N, 1, H, W) for an (N, C, H, W) image, with values in [0, 1].

    The shape check always runs; the value check is skipped while tracing (see _tracing), so an
    exported graph takes the mask's values on trust.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be an (N, C, H, W) tensor, got shape {tuple(image.shape)}")
    n, _, h, w = image.shape
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != n or mask.shape[2:] != (h, w):
        raise ValueError(f"mask must have shape (N, 1, H, W) = ({n}, 1, {h}, {w}) to match the "
                         f"image of shape {tuple(image.shape)}; got {tuple(mask.shape)} "
                         "(one single-channel mask per image)")
    if not _tracing() and not bool(((mask >= 0) & (mask <= 1)).all()):    # NaN fails too
        raise ValueError(f"mask values must lie in [0, 1] (1 = translate, 0 = keep); got "
                         f"min {mask.min().item():g}, max {mask.max().item():g}")


class MaskCycleGANTranslator(nn.Module):
    size_multiple = ResnetGenerator.size_multiple

    def __init__(self, config: MaskCycleGANConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.mask_encoder = nn.Conv2d(2 * c, c, 1)          # E_m on cat[x * m, m]
        self.context_encoder = nn.Conv2d(2 * c, c, 1)       # E_c on cat[x * (1 - m), 1 - m]
        self.generator = ResnetGenerator(c, c, config.ngf, config.n_blocks, config.dropout)

    def raw(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The unclamped output (N, C, H, W) for image (N, C, H, W) and mask (N, 1, H, W)."""
        check_mask(image, mask)
        # The mask is repeated over the C channels, so that both halves of each concatenation
        # have C channels (2C in all): the reference samples C-channel masks, and E_m and E_c
        # are 2C -> C convolutions there, so its weights load unchanged.
        m = mask.expand(-1, image.shape[1], -1, -1)                         # (N, C, H, W)
        keep = 1 - m
        masked = self.generator(self.mask_encoder(torch.cat([image * m, m], dim=1)))
        return masked + self.context_encoder(torch.cat([image * keep, keep], dim=1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"translation": torch.clamp(self.raw(image, mask), -1.0, 1.0)}


def maskcyclegan_signatures(config: MaskCycleGANConfig) -> dict[str, ModelSpec]:
    # An empty mask has no meaningful answer (see the module's notes): backends disagree on the
    # amplified rounding noise, so serving refuses one.
    c = config.channels
    return {"default": ModelSpec((image_spec("image", c), mask_spec("mask", nonempty=True)),
                                 (image_spec("translation", c),),
                                 MaskCycleGANTranslator.size_multiple, c,
                                 composite=Composite("translation", "mask", "blend"))}
