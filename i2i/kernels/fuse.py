"""use_fused_kernels(model): swap the fused ops into a generator, at load time, for inference.

The swapped modules reuse the original convolutions (same parameters, same state_dict keys):
- ConvNormReLU (stem, downsampling, upsampling): instance norm + ReLU -> instance_norm_act
- ResidualBlock: both norms -> instance_norm_act, the second with the skip added in the kernel
- AddMask (the additive model's output step) -> add_mask_clamp
- HAdaIN (LOMIT's instance norm + foreground/background style blend) -> instance_norm_hadain

The fused modules are for inference: they ignore dropout, as eval mode does. A module whose
arithmetic no kernel computes (a batch or affine instance norm, no norm, LOMIT's row_std
normalisation of the reference code) stays as it is, unfused, and is listed in
`model.unfused_kernels`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.additive import AddMask
from ..models.lomit import HAdaIN
from ..models.resnet import ConvNormReLU, ResidualBlock
from . import add_mask_clamp as _amc  # noqa: F401 - registers torch.ops.i2i.add_mask_clamp
from . import instance_norm_act as _ina  # noqa: F401 - registers torch.ops.i2i.instance_norm_act
from . import instance_norm_hadain as _inh  # noqa: F401 - registers the instance_norm_hadain op


class NotFusable(ValueError):
    """The module computes something no kernel does; it is left unfused."""


def _eps(norm: nn.Module) -> float:
    if type(norm) is not nn.InstanceNorm2d or norm.affine or norm.track_running_stats:
        raise NotFusable("only InstanceNorm2d(affine=False, track_running_stats=False) is fused")
    return float(norm.eps)


class FusedConvNormReLU(nn.Module):
    def __init__(self, original: ConvNormReLU):
        super().__init__()
        self.pad, self.conv = original.pad, original.conv
        self.eps = _eps(original.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.i2i.instance_norm_act(self.conv(self.pad(x)), relu=True, eps=self.eps)


class FusedResidualBlock(nn.Module):
    def __init__(self, original: ResidualBlock):
        super().__init__()
        self.pad1, self.conv1 = original.pad1, original.conv1
        self.pad2, self.conv2 = original.pad2, original.conv2
        self.eps1, self.eps2 = _eps(original.norm1), _eps(original.norm2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.ops.i2i.instance_norm_act(self.conv1(self.pad1(x)), relu=True, eps=self.eps1)
        return torch.ops.i2i.instance_norm_act(self.conv2(self.pad2(h)), residual=x,
                                               relu=False, eps=self.eps2)


class FusedAddMask(nn.Module):
    """AddMask on add_mask_clamp. `strength`: a float (every row), or one value per row of
    `image` as an (N, 1) or (N,) tensor; the op gets an (N,) float32 tensor on image's device."""

    def forward(self, image: torch.Tensor, logits: torch.Tensor,
                strength: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(strength, torch.Tensor):
            if strength.dim() not in (1, 2) or (strength.dim() == 2 and strength.shape[1] != 1):
                raise ValueError("strength must be a float or a tensor of shape (N, 1) or (N,), "
                                 f"got shape {tuple(strength.shape)}")
            strength = strength.reshape(-1).to(device=image.device, dtype=torch.float32)
        else:
            strength = torch.full(image.shape[:1], float(strength), dtype=torch.float32,
                                  device=image.device)
        return torch.ops.i2i.add_mask_clamp(image, logits, strength)


class FusedHAdaIN(nn.Module):
    def __init__(self, original: HAdaIN):
        super().__init__()
        if original.norm != "instance":
            # The kernel computes per-(n, c) statistics over h*w; the reference code's row_std
            # needs a per-row std first and a std of those: a different reduction.
            raise NotFusable(f"HAdaIN with the {original.norm!r} normalisation has no kernel")
        self.eps = float(original.eps)

    def forward(self, c: torch.Tensor, mask: torch.Tensor, gamma_fg: torch.Tensor,
                beta_fg: torch.Tensor, gamma_bg: torch.Tensor, beta_bg: torch.Tensor
                ) -> torch.Tensor:
        # c (N, C, h, w); mask (N, 1, h, w) at c's resolution; styles (N, C)
        return torch.ops.i2i.instance_norm_hadain(c, mask, gamma_fg, beta_fg, gamma_bg, beta_bg,
                                                  eps=self.eps)


SWAPS: dict[type, type] = {
    ConvNormReLU: FusedConvNormReLU,
    ResidualBlock: FusedResidualBlock,
    AddMask: lambda original: FusedAddMask(),
    HAdaIN: FusedHAdaIN,
}


def use_fused_kernels(model: nn.Module) -> nn.Module:
    """Replace every matching step of `model` in place; returns the model, with the count of
    swapped modules in `fused_kernels` and the names of those left unfused in `unfused_kernels`."""
    swapped, unfused = 0, []
    for name, module in list(model.named_modules()):
        make = SWAPS.get(type(module))
        if make is None or not name:
            continue
        try:
            fused = make(module)
        except NotFusable:
            unfused.append(name)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, fused)
        swapped += 1
    if swapped == 0:
        why = f" ({', '.join(unfused)} compute what no kernel does)" if unfused else ""
        raise ValueError(f"use_fused_kernels found nothing to fuse in "
                         f"{type(model).__name__}{why}; use the eager engine")
    model.fused_kernels = swapped
    model.unfused_kernels = unfused
    return model
