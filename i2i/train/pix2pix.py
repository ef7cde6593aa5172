"""The pix2pix objective: a U-Net generator against a conditional PatchGAN, plus L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.discriminators import PatchGAN
from ..models.pix2pix import Pix2PixConfig, Pix2PixTranslator
from .recipe import Recipe, RecipeOptions, adam, d_step, gan_terms, set_requires_grad


def pix2pix_config(o: RecipeOptions) -> Pix2PixConfig:
    """A U-Net of o.depth levels (the loop derives it from --size unless --depth is given)."""
    return Pix2PixConfig(depth=o.depth, ngf=o.ngf)


class Pix2PixRecipe(Recipe):
    """pix2pix: conditional GAN (BCE unless --gan-mode) on cat(A, B) + lambda_l1 x L1."""

    one_way = ("pix2pix trains one generator, on aligned A -> B pairs; "
               "`i2i-train --model pix2pix --direction BtoA` trains one the other way")

    def __init__(self, config: Pix2PixConfig, o: RecipeOptions):
        self.translator = Pix2PixTranslator(config)
        self.d = PatchGAN(2 * config.channels, o.ndf, o.disc_layers, norm="batch")
        if o.batch_size == 1 and self.d.last_norm_side(o.size) < 2:
            raise ValueError(
                f"--size {o.size} is too small for a {o.disc_layers}-layer PatchGAN at batch 1: "
                f"its last batch norm would see 1x1 maps, which have no statistics of their "
                f"own; use --disc-layers {o.disc_layers - 1}, a larger --size or --batch-size")
        self.nets = {"G_AB": self.translator, "D": self.d}
        self.optimizers = {"G": adam(self.translator.parameters(), o),
                           "D": adam(self.d.parameters(), o)}
        self.pools = {}
        self.gan, self.penalty = gan_terms(o, self.pools)
        self.loss_weights = {"lambda_l1": o.lambda_l1, "gan_mode": o.gan_mode}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["A"], batch["B"]
        fake = self.translator.generator(x)
        d_loss = d_step(self.optimizers["D"], [
            (self.d, torch.cat([x, y], 1), torch.cat([x, fake], 1))], self.gan, self.penalty)
        set_requires_grad([self.d], False)
        gan = self.gan(self.d(torch.cat([x, fake], 1)), True)
        l1 = F.l1_loss(fake, y)
        g_loss = gan + self.loss_weights["lambda_l1"] * l1
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["G"].step()
        set_requires_grad([self.d], True)
        return {"G": g_loss.item(), "gan": gan.item(), "l1": l1.item(), "D": d_loss}
