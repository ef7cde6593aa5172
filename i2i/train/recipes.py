"""Training recipes: one class per objective, each owning its networks, optimisers and pools.

A recipe's `translator` is the inference module written to checkpoints (A -> B). Everything
else it trains (the reverse generator, discriminators) lives only in the training state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models import (
    AdditiveConfig,
    AdditiveTranslator,
    CycleGANConfig,
    CycleGANTranslator,
    Pix2PixConfig,
    Pix2PixTranslator,
)
from ..models.discriminators import DCGAN64, PatchGAN
from .figures import translation_grid
from .losses import ImagePool, bce_gan, lsgan


@dataclass
class RecipeOptions:
    """Loss weights and network sizes a recipe is built from (recorded in checkpoints)."""

    size: int = 64
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
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    n_labels: int = 1               # exemplar models: label columns the classifier predicts
    masks: str | None = None        # maskcyclegan: the mask scheme (i2i.data.masks); None -> rects
    extra: dict = field(default_factory=dict)


def _adam(params, o: RecipeOptions) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=o.lr, betas=o.betas)


def _discriminator(o: RecipeOptions, in_channels: int = 3, norm: str = "instance") -> nn.Module:
    if o.disc == "dcgan":
        if o.size != 64:
            raise ValueError(f"--disc dcgan needs --size 64, got {o.size}; use --disc patch")
        return DCGAN64(in_channels, o.ndf)
    if o.disc == "patch":
        return PatchGAN(in_channels, o.ndf, o.disc_layers, norm)
    raise ValueError(f"unknown discriminator {o.disc!r}; known: patch, dcgan")


class Recipe(ABC):
    model_name: str
    translator: nn.Module
    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    pools: dict[str, ImagePool]
    loss_weights: dict[str, float]
    labelled = False        # True: batches carry "label_A"/"label_B" (exemplar models)
    step_index = 0          # set by the loop before each step (recipes with update schedules)

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


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _d_step(opt, pairs: list[tuple[nn.Module, torch.Tensor, torch.Tensor]], gan) -> float:
    """One discriminator update; pairs of (D, real, fake); loss 0.5 (real + fake) per D."""
    opt.zero_grad(set_to_none=True)
    total = sum(0.5 * (gan(d(real), True) + gan(d(fake.detach()), False))
                for d, real, fake in pairs)
    total.backward()
    opt.step()
    return total.item()


class TwoWayRecipe(Recipe):
    """The cycle set-up: generators A -> B and B -> A, an LSGAN discriminator per domain, and a
    replay pool per domain feeding the discriminators."""

    def __init__(self, translator: nn.Module, reverse: nn.Module, o: RecipeOptions):
        self.translator, self.reverse = translator, reverse
        self.d_a, self.d_b = _discriminator(o), _discriminator(o)
        self.nets = {"G_AB": self.translator, "G_BA": self.reverse, "D_A": self.d_a,
                     "D_B": self.d_b}
        self.optimizers = {
            "G": _adam(list(self.translator.parameters()) + list(self.reverse.parameters()), o),
            "D": _adam(list(self.d_a.parameters()) + list(self.d_b.parameters()), o)}
        self.pools = {"A": ImagePool(o.pool_size, o.seed + 1),
                      "B": ImagePool(o.pool_size, o.seed + 2)}

    def _update(self, g_loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                fake_x: torch.Tensor, fake_y: torch.Tensor) -> float:
        """Step the generators on g_loss, then the discriminators; returns D's loss."""
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["G"].step()
        _set_requires_grad([self.d_a, self.d_b], True)
        return _d_step(self.optimizers["D"], [
            (self.d_b, y, self.pools["B"].query(fake_y)),
            (self.d_a, x, self.pools["A"].query(fake_x))], lsgan)


class AdditiveRecipe(TwoWayRecipe):
    """Seed 000, unsupervised: two mask generators, two discriminators, LSGAN, cycle, L1 mask."""

    model_name = "additive"

    def __init__(self, config: AdditiveConfig, o: RecipeOptions):
        super().__init__(AdditiveTranslator(config), AdditiveTranslator(config), o)
        self.loss_weights = {"lambda_gan": o.lambda_gan, "lambda_cycle": o.lambda_cycle,
                             "lambda_r": o.lambda_r}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        w = self.loss_weights
        x, y = batch["A"], batch["B"]
        m_xy, m_yx = self.translator.mask(x), self.reverse.mask(y)
        fake_y = torch.clamp(x + m_xy, -1, 1)
        fake_x = torch.clamp(y + m_yx, -1, 1)
        # Cycle on G(G(x) + x) + (G(x) + x): the reverse mask is added to the translation.
        rec_x = torch.clamp(fake_y + self.reverse.mask(fake_y), -1, 1)
        rec_y = torch.clamp(fake_x + self.translator.mask(fake_x), -1, 1)
        _set_requires_grad([self.d_a, self.d_b], False)
        gan = lsgan(self.d_b(fake_y), True) + lsgan(self.d_a(fake_x), True)
        cycle = F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y)
        reg = m_xy.abs().mean() + m_yx.abs().mean()
        g_loss = w["lambda_gan"] * gan + w["lambda_cycle"] * cycle + w["lambda_r"] * reg
        d_loss = self._update(g_loss, x, y, fake_x, fake_y)
        return {"G": g_loss.item(), "gan": gan.item(), "cycle": cycle.item(),
                "mask_l1": reg.item(), "D": d_loss}


class AdditiveSupervisedRecipe(Recipe):
    """Seed 000, supervised: one mask generator, L1(clamp(x + m), y) + lambda_r |m|."""

    model_name = "additive"

    def __init__(self, config: AdditiveConfig, o: RecipeOptions):
        self.translator = AdditiveTranslator(config)
        self.nets = {"G_AB": self.translator}
        self.optimizers = {"G": _adam(self.translator.parameters(), o)}
        self.pools = {}
        self.loss_weights = {"lambda_r": o.lambda_r}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["A"], batch["B"]
        m = self.translator.mask(x)
        l1 = F.l1_loss(torch.clamp(x + m, -1, 1), y)
        reg = m.abs().mean()
        loss = l1 + self.loss_weights["lambda_r"] * reg
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["G"].step()
        return {"G": loss.item(), "l1": l1.item(), "mask_l1": reg.item()}


class CycleGANRecipe(TwoWayRecipe):
    """CycleGAN: LSGAN, cycle 10, identity 0.5 x cycle weight."""

    model_name = "cyclegan"

    def __init__(self, config: CycleGANConfig, o: RecipeOptions):
        super().__init__(CycleGANTranslator(config), CycleGANTranslator(config), o)
        self.loss_weights = {"lambda_cycle": o.lambda_cycle,
                             "lambda_identity": o.lambda_identity}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        w = self.loss_weights
        g_ab, g_ba = self.translator.generator, self.reverse.generator
        x, y = batch["A"], batch["B"]
        fake_y, fake_x = g_ab(x), g_ba(y)
        _set_requires_grad([self.d_a, self.d_b], False)
        gan = lsgan(self.d_b(fake_y), True) + lsgan(self.d_a(fake_x), True)
        cycle = F.l1_loss(g_ba(fake_y), x) + F.l1_loss(g_ab(fake_x), y)
        identity = F.l1_loss(g_ab(y), y) + F.l1_loss(g_ba(x), x)
        g_loss = gan + w["lambda_cycle"] * (cycle + w["lambda_identity"] * identity)
        d_loss = self._update(g_loss, x, y, fake_x, fake_y)
        return {"G": g_loss.item(), "gan": gan.item(), "cycle": cycle.item(),
                "identity": identity.item(), "D": d_loss}


class Pix2PixRecipe(Recipe):
    """pix2pix: conditional GAN (BCE) on cat(A, B) + lambda_l1 x L1."""

    model_name = "pix2pix"

    def __init__(self, config: Pix2PixConfig, o: RecipeOptions):
        self.translator = Pix2PixTranslator(config)
        self.d = PatchGAN(2 * config.channels, o.ndf, o.disc_layers, norm="batch")
        self.nets = {"G_AB": self.translator, "D": self.d}
        self.optimizers = {"G": _adam(self.translator.parameters(), o),
                           "D": _adam(self.d.parameters(), o)}
        self.pools = {}
        self.loss_weights = {"lambda_l1": o.lambda_l1}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["A"], batch["B"]
        fake = self.translator.generator(x)
        d_loss = _d_step(self.optimizers["D"], [
            (self.d, torch.cat([x, y], 1), torch.cat([x, fake], 1))], bce_gan)
        _set_requires_grad([self.d], False)
        gan = bce_gan(self.d(torch.cat([x, fake], 1)), True)
        l1 = F.l1_loss(fake, y)
        g_loss = gan + self.loss_weights["lambda_l1"] * l1
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["G"].step()
        _set_requires_grad([self.d], True)
        return {"G": g_loss.item(), "gan": gan.item(), "l1": l1.item(), "D": d_loss}


def make_recipe(model: str, supervised: bool, o: RecipeOptions) -> tuple[Recipe, object]:
    """(recipe, model config) for a model name; supervised selects additive's paired variant."""
    if model == "additive":
        config = AdditiveConfig(ngf=o.ngf, n_blocks=o.n_blocks)
        cls = AdditiveSupervisedRecipe if supervised else AdditiveRecipe
        return cls(config, o), config
    if supervised:
        raise ValueError(f"--supervised applies to the additive model only, not {model!r}")
    if model == "cyclegan":
        config = CycleGANConfig(ngf=o.ngf, n_blocks=o.n_blocks)
        return CycleGANRecipe(config, o), config
    if model == "pix2pix":
        config = Pix2PixConfig(depth=o.depth, ngf=o.ngf)
        return Pix2PixRecipe(config, o), config
    if model == "maskcyclegan":
        from ..models import MaskCycleGANConfig
        from .maskcyclegan_recipe import DEFAULT_MASKS, MaskCycleGANRecipe
        config = MaskCycleGANConfig(ngf=o.ngf, n_blocks=o.n_blocks)
        return MaskCycleGANRecipe(config, o, o.masks or DEFAULT_MASKS), config
    if model == "lomit":
        from ..models import LomitConfig
        from .lomit_recipe import LomitRecipe
        config = LomitConfig(ngf=o.ngf, n_res=o.n_blocks)
        return LomitRecipe(config, o, o.n_labels), config
    from ..models import get_entry
    get_entry(model)                        # raises the "unknown model ..." error
    raise ValueError(f"model {model!r} has no training recipe yet")


def needs_labels(model: str) -> bool:
    """Exemplar models train on labelled input/exemplar pairs."""
    return model == "lomit"


def needs_pairs(model: str, supervised: bool) -> bool:
    return model == "pix2pix" or (model == "additive" and supervised)
