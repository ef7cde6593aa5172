"""What every training recipe shares: its options, the Recipe base, the two-generator cycle set-up,
and the Adam, discriminator and update helpers. One file per objective builds on it;
train/registry.py names them.

A recipe's `translator` is the inference module written to checkpoints (A -> B). Everything
else it trains (the reverse generator, discriminators) lives only in the training state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.discriminators import DCGAN64, PatchGAN
from .figures import translation_grid
from .losses import ImagePool, SeededStream, gan_loss, gradient_penalty


@dataclass
class RecipeOptions:
    """Loss weights and network sizes a recipe is built from (recorded in checkpoints)."""

    size: int = 64
    batch_size: int = 16
    ngf: int = 64
    n_blocks: int = 9
    depth: int = 8
    ndf: int = 64
    disc: str = "patch"             # patch | dcgan (64x64 only)
    disc_layers: int = 3
    lambda_r: float = 1.0           # additive: weight of the L1 mask penalty
    lambda_gan: float = 0.5         # additive: weight of the LSGAN term
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5    # cyclegan: times lambda_cycle, as the reference does
    lambda_l1: float = 100.0        # pix2pix
    pool_size: int = 50
    gan_mode: str = "lsgan"         # recipes that take it: lsgan | vanilla | wgangp (losses.py)
    init_type: str = "default"      # train/init.py; the registry gives each recipe its own
    init_gain: float = 0.02
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    n_labels: int = 1               # exemplar models: label columns the classifier predicts
    masks: str | None = None        # maskcyclegan: the mask scheme (i2i.data.masks); None -> rects
    follow: str = "paper"           # recipes that take it: paper | code (their reference code)
    switches: dict[str, bool] = field(default_factory=dict)   # the recipe's, by name (registry)
    extra: dict = field(default_factory=dict)


def following_code(o: RecipeOptions) -> bool:
    """True for --follow code; ValueError for anything but paper or code."""
    if o.follow not in ("paper", "code"):
        raise ValueError(f"--follow must be paper or code, got {o.follow!r}")
    return o.follow == "code"


def adam(params, o: RecipeOptions) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=o.lr, betas=o.betas)


def discriminator(o: RecipeOptions, in_channels: int = 3, norm: str = "instance") -> nn.Module:
    if o.disc == "dcgan":
        if o.size != 64:
            raise ValueError(f"--disc dcgan needs --size 64, got {o.size}; use --disc patch")
        return DCGAN64(in_channels, o.ndf)
    if o.disc == "patch":
        return PatchGAN(in_channels, o.ndf, o.disc_layers, norm)
    raise ValueError(f"unknown discriminator {o.disc!r}; known: patch, dcgan")


class Recipe(ABC):
    """An objective: its networks, optimisers and pools; built by `build(config, options)`."""

    translator: nn.Module
    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    pools: dict[str, ImagePool]
    loss_weights: dict[str, float]
    labelled = False        # True: batches carry "label_A"/"label_B" (exemplar models)
    # Why a run of this recipe has no B -> A checkpoint, for recipes that train no reverse
    # generator of the same model; the loop records it in the checkpoint's meta["one_way"],
    # where i2i-export --direction BtoA reads it.
    one_way: str | None = None
    step_index = 0          # set by the loop before each step (recipes with update schedules)

    @classmethod
    def build(cls, config: Any, o: RecipeOptions) -> Recipe:
        """The recipe for a model config; recipes with settings of their own override this."""
        return cls(config, o)

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a batch {'A': (B,C,H,W), 'B': ...}; returns the losses."""

    @torch.no_grad()
    def sample_grid(self, fixed: dict[str, torch.Tensor], paired: bool, scale: int):
        """The picture written to samples/: input / mask / output (/ target when paired)."""
        outputs = self.translator(fixed["A"])
        return translation_grid(fixed["A"], outputs, fixed["B"] if paired else None, scale)

    def to(self, device: torch.device) -> Recipe:
        for net in self.nets.values():
            net.to(device)
        return self

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def d_step(opt, pairs: list[tuple[nn.Module, torch.Tensor, torch.Tensor]], gan,
           penalty: SeededStream | None = None) -> float:
    """One discriminator update; pairs of (D, real, fake); loss 0.5 (real + fake) per D, plus
    the gradient penalty per D when `penalty` (the stream its mixing weights come from) is
    given."""
    opt.zero_grad(set_to_none=True)
    total = sum(0.5 * (gan(d(real), True) + gan(d(fake.detach()), False))
                for d, real, fake in pairs)
    if penalty is not None:
        total = total + sum(gradient_penalty(d, real, fake, penalty.generator)
                            for d, real, fake in pairs)
    total.backward()
    opt.step()
    return total.item()


def gan_terms(o: RecipeOptions, pools: dict) -> tuple:
    """(loss, penalty stream or None) of o.gan_mode; wgangp adds its stream to `pools` so that
    the training state keeps it."""
    gan = gan_loss(o.gan_mode)
    if o.gan_mode != "wgangp":
        return gan, None
    pools["penalty"] = SeededStream(o.seed + 31)
    return gan, pools["penalty"]


class TwoWayRecipe(Recipe):
    """The cycle set-up: generators A -> B and B -> A, a discriminator per domain (LSGAN unless
    o.gan_mode says otherwise), and a replay pool per domain feeding the discriminators."""

    def __init__(self, translator: nn.Module, reverse: nn.Module, o: RecipeOptions):
        self.translator, self.reverse = translator, reverse
        self.d_a, self.d_b = discriminator(o), discriminator(o)
        self.nets = {"G_AB": self.translator, "G_BA": self.reverse, "D_A": self.d_a,
                     "D_B": self.d_b}
        self.optimizers = {
            "G": adam(list(self.translator.parameters()) + list(self.reverse.parameters()), o),
            "D": adam(list(self.d_a.parameters()) + list(self.d_b.parameters()), o)}
        self.pools = {"A": ImagePool(o.pool_size, o.seed + 1),
                      "B": ImagePool(o.pool_size, o.seed + 2)}
        self.gan, self.penalty = gan_terms(o, self.pools)

    def _update(self, g_loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                fake_x: torch.Tensor, fake_y: torch.Tensor) -> float:
        """Step the generators on g_loss, then the discriminators; returns D's loss."""
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["G"].step()
        set_requires_grad([self.d_a, self.d_b], True)
        return d_step(self.optimizers["D"], [
            (self.d_b, y, self.pools["B"].query(fake_y)),
            (self.d_a, x, self.pools["A"].query(fake_x))], self.gan, self.penalty)
