"""The CycleGAN objective: two ResNet generators, LSGAN, cycle and identity losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.cyclegan import CycleGANConfig, CycleGANTranslator
from .recipe import RecipeOptions, TwoWayRecipe, set_requires_grad


def cyclegan_config(o: RecipeOptions) -> CycleGANConfig:
    return CycleGANConfig(ngf=o.ngf, n_blocks=o.n_blocks)


class CycleGANRecipe(TwoWayRecipe):
    """CycleGAN: LSGAN (--gan-mode), cycle 10, identity 0.5 x cycle weight."""

    def __init__(self, config: CycleGANConfig, o: RecipeOptions):
        super().__init__(CycleGANTranslator(config), CycleGANTranslator(config), o)
        self.loss_weights = {"lambda_cycle": o.lambda_cycle,
                             "lambda_identity": o.lambda_identity, "gan_mode": o.gan_mode}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        w = self.loss_weights
        g_ab, g_ba = self.translator.generator, self.reverse.generator
        x, y = batch["A"], batch["B"]
        fake_y, fake_x = g_ab(x), g_ba(y)
        set_requires_grad([self.d_a, self.d_b], False)
        gan = self.gan(self.d_b(fake_y), True) + self.gan(self.d_a(fake_x), True)
        cycle = F.l1_loss(g_ba(fake_y), x) + F.l1_loss(g_ab(fake_x), y)
        identity = F.l1_loss(g_ab(y), y) + F.l1_loss(g_ba(x), x)
        g_loss = gan + w["lambda_cycle"] * (cycle + w["lambda_identity"] * identity)
        d_loss = self._update(g_loss, x, y, fake_x, fake_y)
        return {"G": g_loss.item(), "gan": gan.item(), "cycle": cycle.item(),
                "identity": identity.item(), "D": d_loss}
