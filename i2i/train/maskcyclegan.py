"""Mask CycleGAN's training objective (seed 004), with masks drawn from a named scheme.

Each step draws one mask per image (i2i.data.masks, the recipe's own seeded stream) and trains the
generators A -> B and B -> A with
    GAN      0.7 x masked + 0.3 x full, each LSGAN, against two discriminators per domain: one
             sees whole images, the other images multiplied by the mask (real images under the
             same mask as the fake they are compared with);
    cycle    10 x (0.3 x L1 inside the mask + 0.7 x L1 outside it), the reverse generator using
             the same mask;
    identity 5 x L1(G_AB(y, m), y) and 5 x L1(G_BA(x, m), x).
L1 inside/outside is the mean over all pixels of |a - b| * m (resp. 1 - m). As in the reference
code the generators' outputs are not clamped during training; inference clamps them.

--follow code trains as the published code does (model/train.py, gen_random_mask in
model/utils.py and Discriminator in model/models.py of minfawang/mask-cgan): one mask per batch,
shared by every image of A and of B; each discriminator's patch scores averaged to one score
per image before the LSGAN loss; the discriminators' losses weighted 0.3 full and 0.7 masked
(the paper's weights, which i2i otherwise gives only to the generators' GAN term); and, when
--masks is not given, centred squares of scale 0.5, 0.8 or 1.0 (one drawn per batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.masks import parse_mask_spec
from ..models.maskcyclegan import MaskCycleGANConfig, MaskCycleGANTranslator
from .figures import grid, image_rgb, scaled, unit_mask_rgb
from .losses import ImagePool, SeededStream, lsgan
from .recipe import Recipe, RecipeOptions, adam, discriminator, following_code, set_requires_grad

DEFAULT_MASKS = "rects"
CODE_MASKS = "center:0.5/0.8/1.0"      # the reference code's default mask_scales
GAN_MASKED, GAN_FULL = 0.7, 0.3
CYCLE_MASKED, CYCLE_CONTEXT = 0.3, 0.7
IDENTITY = 5.0


def masked_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean(|a - b| * weight); weight (N, 1, H, W) broadcast over the channels."""
    return ((a - b).abs() * weight).mean()


def maskcyclegan_config(o: RecipeOptions) -> MaskCycleGANConfig:
    following_code(o)                   # a --follow other than paper or code fails here
    return MaskCycleGANConfig(ngf=o.ngf, n_blocks=o.n_blocks)


class MaskCycleGANRecipe(Recipe):

    def __init__(self, config: MaskCycleGANConfig, o: RecipeOptions, masks: str = DEFAULT_MASKS):
        self.code = following_code(o)
        self.translator = MaskCycleGANTranslator(config)
        self.reverse = MaskCycleGANTranslator(config)
        self.sampler = parse_mask_spec(masks)
        self.masks = masks
        self.d = {f"D_{kind}_{domain}": discriminator(o) for domain in "AB"
                  for kind in ("full", "masked")}
        self.nets = {"G_AB": self.translator, "G_BA": self.reverse, **self.d}
        self.optimizers = {
            "G": adam(list(self.translator.parameters()) + list(self.reverse.parameters()), o),
            "D": adam([p for d in self.d.values() for p in d.parameters()], o)}
        self.stream = SeededStream(o.seed + 11)
        self.pools = {"masks": self.stream}
        for i, key in enumerate(self.d):
            self.pools[key] = ImagePool(o.pool_size, o.seed + 20 + i)
        self.loss_weights = {"lambda_cycle": o.lambda_cycle, "identity": IDENTITY,
                             "gan_masked": GAN_MASKED, "gan_full": GAN_FULL,
                             "cycle_masked": CYCLE_MASKED, "cycle_context": CYCLE_CONTEXT,
                             "masks": masks, "follow": o.follow}
        # The discriminators' loss weights: the paper's GAN weights in the reference code.
        self.d_weights = {"full": GAN_FULL, "masked": GAN_MASKED} if self.code else \
            {"full": 1.0, "masked": 1.0}

    @classmethod
    def build(cls, config: MaskCycleGANConfig, o: RecipeOptions) -> MaskCycleGANRecipe:
        """Masks from the scheme o.masks (--masks); when not given, rects (--follow code: the
        reference code's centred squares)."""
        return cls(config, o, o.masks or (CODE_MASKS if following_code(o) else DEFAULT_MASKS))

    def draw(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        if self.code:                   # one mask for the whole batch
            return self.sampler.sample(1, h, w, self.stream.generator).expand(n, -1, -1, -1) \
                .to(images.device)
        return self.sampler.sample(n, h, w, self.stream.generator).to(images.device)

    def score(self, d: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """D's patch scores (N, 1, h, w), or with --follow code their mean per image (N, 1)."""
        scores = d(images)
        return scores.mean(dim=(2, 3)) if self.code else scores

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["A"], batch["B"]
        m_x = self.draw(x)                                          # (N, 1, H, W)
        m_y = m_x if self.code else self.draw(y)                    # the code shares A's mask
        g_ab, g_ba = self.translator, self.reverse
        fake_y, fake_x = g_ab.raw(x, m_x), g_ba.raw(y, m_y)
        set_requires_grad(list(self.d.values()), False)
        gan = (self._gan(fake_y, m_x, "B") + self._gan(fake_x, m_y, "A"))
        rec_x, rec_y = g_ba.raw(fake_y, m_x), g_ab.raw(fake_x, m_y)
        cycle = (CYCLE_MASKED * (masked_l1(rec_x, x, m_x) + masked_l1(rec_y, y, m_y))
                 + CYCLE_CONTEXT * (masked_l1(rec_x, x, 1 - m_x) + masked_l1(rec_y, y, 1 - m_y)))
        identity = F.l1_loss(g_ab.raw(y, m_y), y) + F.l1_loss(g_ba.raw(x, m_x), x)
        lam = self.loss_weights["lambda_cycle"]
        g_loss = gan + lam * cycle + IDENTITY * identity
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["G"].step()
        set_requires_grad(list(self.d.values()), True)
        pairs = []
        for domain, real, fake, real_mask in (("B", y, fake_y, m_x), ("A", x, fake_x, m_y)):
            full, masked = f"D_full_{domain}", f"D_masked_{domain}"
            pairs.append(("full", self.d[full], real, self.pools[full].query(fake)))
            pairs.append(("masked", self.d[masked], real * real_mask,
                          self.pools[masked].query(fake * real_mask)))
        d_loss = self._d_step(pairs)
        return {"G": g_loss.item(), "gan": gan.item(), "cycle": cycle.item(),
                "identity": identity.item(), "mask_area": 0.5 * (m_x.mean() + m_y.mean()).item(),
                "D": d_loss}

    def _gan(self, fake: torch.Tensor, mask: torch.Tensor, domain: str) -> torch.Tensor:
        return (GAN_MASKED * lsgan(self.score(self.d[f"D_masked_{domain}"], fake * mask), True)
                + GAN_FULL * lsgan(self.score(self.d[f"D_full_{domain}"], fake), True))

    def _d_step(self, pairs: list[tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor]]
                ) -> float:
        """One discriminator update on (kind, D, real, fake): weight x 0.5 (real + fake) per D."""
        opt = self.optimizers["D"]
        opt.zero_grad(set_to_none=True)
        total = sum(self.d_weights[kind] * 0.5 * (lsgan(self.score(d, real), True)
                                                  + lsgan(self.score(d, fake.detach()), False))
                    for kind, d, real, fake in pairs)
        total.backward()
        opt.step()
        return total.item()

    @torch.no_grad()
    def sample_grid(self, fixed: dict[str, torch.Tensor], paired: bool, scale: int
                    ) -> Image.Image:
        """Rows: input, then (mask, output) for a centred square and two sampled masks."""
        x = fixed["A"]
        n, _, h, w = x.shape
        generator = torch.Generator().manual_seed(0)
        masks = [parse_mask_spec("center:0.5").sample(n, h, w) if h == w else None,
                 self.sampler.sample(n, h, w, generator), self.sampler.sample(n, h, w, generator)]
        rows = [[image_rgb(t) for t in x]]
        for m in (m for m in masks if m is not None):
            out = self.translator(x, m.to(x.device))["translation"]
            rows += [[unit_mask_rgb(t) for t in m], [image_rgb(t) for t in out]]
        return scaled(grid(rows), scale)
