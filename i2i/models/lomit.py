"""LOMIT: exemplar-based translation through co-segmentation masks and highway AdaIN.

Seed 002 ("LOMIT: Local mask-based image-to-image translation via pixel-wise highway adaptive
instance normalization"). For an input x1 and an exemplar x2:

    c1, c2 = E_c(x1), E_c(x2)                          content codes at H/4
    m1 = A(attn(c2) * c1), m2 = A(attn(c1) * c2)       co-segmentation masks at H/4, in [0, 1]
    s_fg = E_f(x2 * m2), s_bg = E_b(x1 * (1 - m1))     style codes of the two regions
    x12 = G(HAdaIN(c1, m1, MLP_f(s_fg), MLP_b(s_bg)))  paper eq. 4, then the decoder

The masks are returned at image resolution (bilinear x4). translate() takes a user mask in place
of m1: the paper edits the masks by hand to pick which region (hair, face) is translated.

The config defaults are the paper's networks. LOMIT's published code (model.py of
AnonymousIclrAuthor/Highway-Adaptive-Instance-Normalization) builds some of them differently;
REFERENCE_CODE holds the config fields that select its variant (i2i-train --follow code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .norms import SampleNorm
from .resnet import ConvNormReLU, ResidualBlock
from .spec import Composite, ModelSpec, image_spec, mask_spec


@dataclass(frozen=True)
class LomitConfig:
    ngf: int = 64
    style_dim: int = 8
    n_res: int = 4              # residual blocks in the content encoder and in the decoder
    mlp_dim: int = 256
    mask_layers: int = 6        # conv3 + norm + ReLU layers of the co-segmentation network
    channels: int = 3
    eps: float = 1e-5           # of the HAdaIN instance norm
    # Where the reference code departs from the paper. A checkpoint without these fields was
    # written before they existed and is the paper's model, which the defaults describe.
    hadain_norm: str = "instance"   # row_std: c / (std over rows of per-row stds), see row_std
    content_norm: str = "instance"  # instance_affine: IN with a learned scale and shift
    shared_style: bool = False      # one style encoder for the foreground and the background
    reflect_pad: bool = False       # reflect padding in the style halvings and co-segmentation
    coseg_bias: bool = False        # biases on the co-segmentation convs before their norm

    def __post_init__(self) -> None:
        for name, known in (("hadain_norm", HADAIN_NORMS), ("content_norm", CONTENT_NORMS)):
            if getattr(self, name) not in known:
                raise ValueError(f"LomitConfig.{name} must be one of {', '.join(known)}; "
                                 f"got {getattr(self, name)!r}")


HADAIN_NORMS = ("instance", "row_std")
CONTENT_NORMS = ("instance", "instance_affine")
# The config fields of the reference code's networks (the paper's are LomitConfig's defaults).
REFERENCE_CODE = {"hadain_norm": "row_std", "content_norm": "instance_affine",
                  "shared_style": True, "reflect_pad": True, "coseg_bias": True}


def row_std(c: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference code's AdaIN normalisation of c (N, C, h, w), h and w >= 2:
    (c - mean over h, w) / (s + eps), where s is the unbiased std over the h rows of each row's
    unbiased std over w. s is not c's std: rows that vary alike make it ~0 whatever they hold."""
    mean = c.mean(dim=(2, 3), keepdim=True)
    s = c.std(dim=3).std(dim=2)[:, :, None, None]                       # (N, C, 1, 1)
    return (c - mean) / (s + eps)


class HAdaIN(nn.Module):
    """m * AdaIN(c, fg style) + (1 - m) * AdaIN(c, bg style), AdaIN with c's own statistics.

    The formula of torch.ops.i2i.instance_norm_hadain in plain torch, as a module of its own so
    that i2i.kernels.use_fused_kernels can swap in the one-pass kernel.
    """

    def __init__(self, eps: float = 1e-5, norm: str = "instance"):
        super().__init__()
        self.eps, self.norm = eps, norm         # norm: instance (the paper) or row_std (code)

    def forward(self, c: torch.Tensor, mask: torch.Tensor, gamma_fg: torch.Tensor,
                beta_fg: torch.Tensor, gamma_bg: torch.Tensor, beta_bg: torch.Tensor
                ) -> torch.Tensor:
        # c (N, C, h, w); mask (N, 1, h, w); styles (N, C)
        if self.norm == "row_std":
            cn = row_std(c, self.eps)
        else:
            cn = F.instance_norm(c, eps=self.eps)
        fg = gamma_fg[:, :, None, None] * cn + beta_fg[:, :, None, None]
        bg = gamma_bg[:, :, None, None] * cn + beta_bg[:, :, None, None]
        return mask * fg + (1 - mask) * bg


class ContentEncoder(nn.Module):
    """(N, C, H, W) -> (N, 4 ngf, H/4, W/4): c7 + two conv4 s2 + residual blocks, IN, reflect.

    affine: each IN learns a per-channel scale and shift, as in the reference code (which also
    tracks running statistics but never uses them: it is never put in eval mode).
    """

    def __init__(self, channels: int, ngf: int, n_res: int, affine: bool = False):
        super().__init__()
        self.stem = ConvNormReLU(channels, ngf, 7, reflect=3)
        self.down = nn.ModuleList([ConvNormReLU(ngf, ngf * 2, 4, stride=2, reflect=1),
                                   ConvNormReLU(ngf * 2, ngf * 4, 4, stride=2, reflect=1)])
        self.blocks = nn.ModuleList([ResidualBlock(ngf * 4) for _ in range(n_res)])
        if affine:
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.InstanceNorm2d):
                        setattr(module, name, nn.InstanceNorm2d(child.num_features, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for layer in [*self.down, *self.blocks]:
            h = layer(h)
        return h


class StyleEncoder(nn.Module):
    """(N, C, H, W) -> (N, style_dim): no norm (it would erase the style), LeakyReLU 0.01."""

    def __init__(self, channels: int, ngf: int, style_dim: int, reflect: bool = False):
        super().__init__()
        widths = [ngf, ngf * 2, ngf * 4, ngf * 4, ngf * 4]
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7),
                                   nn.LeakyReLU(0.01)]
        # Zero padding unless `reflect` (the reference code): the fourth halving sees H/8, which
        # reflect padding takes from MIN_SIZE (16 px) up, not at 8 px.
        padding_mode = "reflect" if reflect else "zeros"
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, padding_mode=padding_mode),
                       nn.LeakyReLU(0.01)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(ngf * 4, style_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.body(x).mean(dim=(2, 3), keepdim=True)       # (N, 4 ngf, 1, 1)
        return self.head(pooled).flatten(1)


class CoSegmentation(nn.Module):
    """(content c, other image's content) -> mask (N, 1, h, w) of c in [0, 1].

    Channel attention from the other image selects what the two have in common (paper Fig. 3).
    reflect, bias: the reference code's reflect padding and biases in the conv3 layers.
    """

    def __init__(self, width: int, layers: int, reflect: bool = False, bias: bool = False):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(),
                                       nn.Linear(2 * width, width), nn.Sigmoid())
        body: list[nn.Module] = []
        for _ in range(layers):
            # SampleNorm: BatchNorm in training, per-sample statistics at inference, so a batch
            # never changes a mask.
            body += [nn.Conv2d(width, width, 3, padding=1, bias=bias,
                               padding_mode="reflect" if reflect else "zeros"),
                     SampleNorm(width), nn.ReLU()]
        self.body = nn.Sequential(*body, nn.Conv2d(width, 1, 1), nn.Sigmoid())

    def forward(self, c: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        attn = self.attention(other.mean(dim=(2, 3)))               # (N, width)
        return self.body(c * attn[:, :, None, None])


class StyleMLP(nn.Module):
    """style code (N, style_dim) -> (gamma, beta), each (N, C): mean and exp(0.5 logvar)."""

    def __init__(self, style_dim: int, mlp_dim: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(style_dim, mlp_dim), nn.LeakyReLU(0.01),
                                 nn.Linear(mlp_dim, mlp_dim), nn.LeakyReLU(0.01),
                                 nn.Linear(mlp_dim, 2 * channels))

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(s).chunk(2, dim=1)
        return torch.exp(0.5 * logvar), mean


class LayerNormResidualBlock(nn.Module):
    """x + LN(conv3(ReLU(LN(conv3(x))))), reflect padding; LN = GroupNorm(1, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.GroupNorm(1, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.GroupNorm(1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Decoder(nn.Module):
    """(N, 4 ngf, H/4, W/4) -> (N, C, H, W) in [-1, 1]."""

    def __init__(self, channels: int, ngf: int, n_res: int):
        super().__init__()
        self.blocks = nn.Sequential(*[LayerNormResidualBlock(ngf * 4) for _ in range(n_res)])
        up: list[nn.Module] = []
        for cin in (ngf * 4, ngf * 2):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(2),
                   nn.Conv2d(cin, cin // 2, 5), nn.GroupNorm(1, cin // 2), nn.ReLU()]
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.blocks(h)))


def upsample_mask(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, H/4, W/4) -> (N, 1, H, W); bilinear keeps it in [0, 1]."""
    return F.interpolate(mask, scale_factor=4, mode="bilinear", align_corners=False)


MIN_SIZE = 16                       # H and W the style encoders can take


class LomitTranslator(nn.Module):
    size_multiple = 4

    def __init__(self, config: LomitConfig):
        super().__init__()
        self.config = config
        c, ngf, width = config.channels, config.ngf, 4 * config.ngf
        self.content = ContentEncoder(c, ngf, config.n_res,
                                      affine=config.content_norm == "instance_affine")
        if config.shared_style:             # the reference code: one encoder, keys style.*
            self.style = StyleEncoder(c, ngf, config.style_dim, config.reflect_pad)
        else:
            self.style_fg = StyleEncoder(c, ngf, config.style_dim, config.reflect_pad)
            self.style_bg = StyleEncoder(c, ngf, config.style_dim, config.reflect_pad)
        self.coseg = CoSegmentation(width, config.mask_layers, config.reflect_pad,
                                    config.coseg_bias)
        self.mlp_fg = StyleMLP(config.style_dim, config.mlp_dim, width)
        self.mlp_bg = StyleMLP(config.style_dim, config.mlp_dim, width)
        self.hadain = HAdaIN(config.eps, config.hadain_norm)
        self.decoder = Decoder(c, ngf, config.n_res)

    def fg_style(self, x: torch.Tensor) -> torch.Tensor:
        """Style code (N, style_dim) of a foreground, x already masked."""
        return (self.style if self.config.shared_style else self.style_fg)(x)

    def bg_style(self, x: torch.Tensor) -> torch.Tensor:
        """Style code (N, style_dim) of a background, x already masked."""
        return (self.style if self.config.shared_style else self.style_bg)(x)

    def forward(self, image: torch.Tensor, exemplar: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `default` signature: the co-segmentation picks both masks."""
        return self.translate(image, exemplar)

    def masked(self, image: torch.Tensor, exemplar: torch.Tensor, mask: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """The `masked` signature: the user's mask (N, 1, H, W) marks what is translated."""
        out = self.translate(image, exemplar, mask)
        return {"translation": out["translation"], "exemplar_mask": out["exemplar_mask"]}

    def translate(self, image: torch.Tensor, exemplar: torch.Tensor,
                  mask: torch.Tensor | None = None, exemplar_mask: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
        """image, exemplar (N, C, H, W); optional masks (N, 1, H, W) in [0, 1] replace the
        co-segmentation's: where mask is 0 the input keeps its own style."""
        c_image, c_exemplar = self.content(image), self.content(exemplar)   # (N, 4 ngf, H/4, W/4)
        if mask is None:
            low = self.coseg(c_image, c_exemplar)                            # (N, 1, H/4, W/4)
            mask = upsample_mask(low)
        else:
            low = F.avg_pool2d(mask, 4)
        if exemplar_mask is None:
            exemplar_mask = upsample_mask(self.coseg(c_exemplar, c_image))
        gamma_fg, beta_fg = self.mlp_fg(self.fg_style(exemplar * exemplar_mask))
        gamma_bg, beta_bg = self.mlp_bg(self.bg_style(image * (1 - mask)))
        h = self.hadain(c_image, low, gamma_fg, beta_fg, gamma_bg, beta_bg)
        return {"translation": self.decoder(h), "mask": mask, "exemplar_mask": exemplar_mask}


def lomit_signatures(config: LomitConfig) -> dict[str, ModelSpec]:
    c, multiple = config.channels, LomitTranslator.size_multiple
    images = (image_spec("image", c), image_spec("exemplar", c))
    exemplar_mask = mask_spec("exemplar_mask", over="exemplar")
    # HAdaIN restyles where the mask is 1 and keeps the input's style where it is 0: the
    # translation is, to a close approximation, a blend of the input through the mask.
    blend = Composite("translation", "mask", "blend")
    # The style encoders halve four times, the last with a 4x4 kernel: at least 16 pixels.
    return {"default": ModelSpec(images, (image_spec("translation", c), mask_spec("mask"),
                                          exemplar_mask), multiple, c, composite=blend,
                                 min_size=MIN_SIZE),
            "masked": ModelSpec((*images, mask_spec("mask")),
                                (image_spec("translation", c), exemplar_mask), multiple, c,
                                method="masked", composite=blend, min_size=MIN_SIZE)}
