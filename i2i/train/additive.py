"""The additive-mask objectives (seed 000): unsupervised (cycle) and supervised (paired L1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.additive import AdditiveConfig, AdditiveTranslator
from .losses import lsgan
from .recipe import Recipe, RecipeOptions, TwoWayRecipe, adam, set_requires_grad


def additive_config(o: RecipeOptions) -> AdditiveConfig:
    """The generator both additive recipes train: a ResNet of n_blocks blocks, ngf wide."""
    return AdditiveConfig(ngf=o.ngf, n_blocks=o.n_blocks)


class AdditiveRecipe(TwoWayRecipe):
    """Seed 000, unsupervised: two mask generators, two discriminators, LSGAN, cycle, L1 mask."""

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
        set_requires_grad([self.d_a, self.d_b], False)
        gan = lsgan(self.d_b(fake_y), True) + lsgan(self.d_a(fake_x), True)
        cycle = F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y)
        reg = m_xy.abs().mean() + m_yx.abs().mean()
        g_loss = w["lambda_gan"] * gan + w["lambda_cycle"] * cycle + w["lambda_r"] * reg
        d_loss = self._update(g_loss, x, y, fake_x, fake_y)
        return {"G": g_loss.item(), "gan": gan.item(), "cycle": cycle.item(),
                "mask_l1": reg.item(), "D": d_loss}


class AdditiveSupervisedRecipe(Recipe):
    """Seed 000, supervised: one mask generator, L1(clamp(x + m), y) + lambda_r |m|."""

    one_way = ("the supervised additive recipe fits one generator to aligned A -> B pairs, "
               "with no cycle and so no B -> A generator")

    def __init__(self, config: AdditiveConfig, o: RecipeOptions):
        self.translator = AdditiveTranslator(config)
        self.nets = {"G_AB": self.translator}
        self.optimizers = {"G": adam(self.translator.parameters(), o)}
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
