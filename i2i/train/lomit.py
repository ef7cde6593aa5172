"""LOMIT's training objective (seed 002, section 4), on labelled input/exemplar pairs.

Each step draws inputs x1 and exemplars x2 with their labels y1, y2 (one column per attribute).
The critic (source + auxiliary classifier heads) is updated every step with WGAN-GP and the
classification loss on real images; the generator every `n_critic`-th step with

    L_G = L_adv + w_cls L_cls_f + w_sc (L_sf + L_sb + L_c) + w_x (L_cyc + L_11 + L_22)
          + w_r1 R1 + w_r2 R2 + w_r3 R3

in both directions (1 -> 2 and 2 -> 1), where
- x12 takes x1's content and background style and x2's foreground style (x21 the reverse);
  x11, x22 are the intra-domain reconstructions;
- the style/content reconstruction compares the codes of x12 (its own co-segmentation with x21)
  with those they were made from; the cycle translates the translated pair back: x121 =
  T(x12 with exemplar x21);
- L_cls_f asks the classifier to see y2 in x12: labels of the exemplar;
- R1 pulls together the mask values of pixels with similar content (cosine similarity of
  content vectors, not back-propagated into the encoder), R2 pushes the two foreground styles
  apart, R3 is the L1 size of the masks.
R1 is the paper's eq. 13 averaged over pixel pairs instead of summed, so its weight does not
scale with the image area.

--follow code trains as LOMIT's published code does (run.py, Run.update_G and Run.update_D, and
configs/config_celebA.yaml of AnonymousIclrAuthor/Highway-Adaptive-Instance-Normalization):
the reference networks (models.lomit.REFERENCE_CODE); x11 decoded through the image's
co-segmentation with itself, m11 = A(attn(c1) * c1), instead of m1; R1 and R3 over three masks
per image (m1, the translated pair's m12 and m11, each against c1's similarities); adversarial,
gradient-penalty and classification terms summed over the two directions, the classification
BCE summed over attributes (mean over the batch); R1 weight 1.0; the generator updated on steps
0, n_critic, 2 n_critic, ...; a critic with reflect padding and biased heads (model.py,
Discriminator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..models.discriminators import ClassifyingCritic
from ..models.lomit import REFERENCE_CODE, LomitConfig, LomitTranslator, upsample_mask
from .figures import exemplar_grid
from .losses import SeededStream
from .recipe import Recipe, RecipeOptions, following_code, set_requires_grad


@dataclass(frozen=True)
class LomitWeights:
    """The paper's loss weights (eq. 16) and WGAN-GP settings."""

    cls: float = 1.0
    style_content: float = 1.0
    image: float = 10.0         # cycle and the two intra-domain reconstructions
    r1: float = 0.1
    r2: float = 0.01
    r3: float = 1e-4
    gp: float = 10.0
    n_critic: int = 5


CODE_WEIGHTS = LomitWeights(r1=1.0)     # the reference config's LAMBDA_MASK_SIM


def critic_layers(size: int, most: int = 6) -> int:
    """Halvings of the critic: the paper's 6 at 128 px, leaving a 2 x 2 map at smaller sizes."""
    if size < 4 or size & (size - 1):
        raise ValueError(f"lomit training needs a power-of-two --size >= 4, got {size}")
    return min(most, int(math.log2(size)) - 1)


class Halves:
    """Content, masks and style codes of a pair, and decoding from any combination of them."""

    def __init__(self, t: LomitTranslator, x1: torch.Tensor, x2: torch.Tensor):
        self.t = t
        self.c1, self.c2 = t.content(x1), t.content(x2)                 # (N, 4 ngf, h, w)
        self.m1, self.m2 = t.coseg(self.c1, self.c2), t.coseg(self.c2, self.c1)   # (N,1,h,w)
        big1, big2 = upsample_mask(self.m1), upsample_mask(self.m2)     # (N, 1, H, W)
        self.f1, self.b1 = t.fg_style(x1 * big1), t.bg_style(x1 * (1 - big1))
        self.f2, self.b2 = t.fg_style(x2 * big2), t.bg_style(x2 * (1 - big2))

    def decode(self, c: torch.Tensor, m: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor
               ) -> torch.Tensor:
        gamma_fg, beta_fg = self.t.mlp_fg(fg)
        gamma_bg, beta_bg = self.t.mlp_bg(bg)
        return self.t.decoder(self.t.hadain(c, m, gamma_fg, beta_fg, gamma_bg, beta_bg))

    def crossed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x12, x21): each image's content and background with the other's foreground."""
        return (self.decode(self.c1, self.m1, self.f2, self.b1),
                self.decode(self.c2, self.m2, self.f1, self.b2))

    def own(self, m11: torch.Tensor | None = None, m22: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x11, x22): each image rebuilt from its own codes, through m1 and m2 unless other
        masks (the reference code's self-co-segmentations) are given."""
        return (self.decode(self.c1, self.m1 if m11 is None else m11, self.f1, self.b1),
                self.decode(self.c2, self.m2 if m22 is None else m22, self.f2, self.b2))

    def self_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(m11, m22): each image co-segmented with itself, (N, 1, h, w)."""
        return self.t.coseg(self.c1, self.c1), self.t.coseg(self.c2, self.c2)


def content_consistency(m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """R1: mean over pixel pairs of |m_i - m_j| * cos(c_i, c_j); c is not back-propagated.

    m (N, 1, h, w), c (N, C, h, w) at the same resolution.
    """
    flat_m = m.flatten(2).transpose(1, 2)                                # (N, hw, 1)
    unit = F.normalize(c.detach().flatten(2), dim=1)                     # (N, C, hw)
    similarity = unit.transpose(1, 2) @ unit                             # (N, hw, hw)
    distance = (flat_m - flat_m.transpose(1, 2)).abs()                   # (N, hw, hw)
    return (distance * similarity).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates of real and fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores, _ = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def summed_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference code's classification loss: BCE summed over the K attributes, averaged
    over the batch; logits and labels (N, K)."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / logits.shape[0]


GENERATOR_LOSSES = ("G", "adv", "cls_fake", "style", "content", "cycle", "rebuild", "r1", "r2",
                    "mask_mean")


def paper_init(translator: nn.Module, critic: nn.Module) -> None:
    """The paper's initialisation (appendix 7.2): He-normal for the generator's convolutions and
    linear layers, a normal distribution (std 0.02) for the critic; biases zero.

    It matters: under PyTorch's default (smaller) initialisation the bias-free stack of six
    style-encoder layers gives style codes about 150x smaller, nearly the same for every image,
    and the style reconstruction loss then keeps them collapsed, so no exemplar is ever followed.
    """
    for module in translator.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in critic.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def lomit_config(o: RecipeOptions) -> LomitConfig:
    """The paper's networks, ngf wide, with n_blocks residual blocks in the content encoder and in
    the decoder; with --follow code, the reference code's networks."""
    return LomitConfig(ngf=o.ngf, n_res=o.n_blocks, **(REFERENCE_CODE if following_code(o) else {}))


class LomitRecipe(Recipe):
    labelled = True
    one_way = ("lomit trains one generator for both ways, which takes on the exemplar's "
               "attributes: translate with an exemplar of the other domain instead")

    def __init__(self, config: LomitConfig, o: RecipeOptions, n_labels: int,
                 weights: LomitWeights = LomitWeights()):
        self.translator = LomitTranslator(config)
        self.critic = ClassifyingCritic(o.size, n_labels, config.channels, o.ndf,
                                        critic_layers(o.size), reflect=following_code(o),
                                        head_bias=following_code(o))
        paper_init(self.translator, self.critic)
        self.nets = {"G": self.translator, "D": self.critic}
        self.optimizers = {
            "G": torch.optim.Adam(self.translator.parameters(), lr=o.lr, betas=o.betas),
            "D": torch.optim.Adam(self.critic.parameters(), lr=o.lr, betas=o.betas)}
        self.weights = weights
        self.code = following_code(o)
        self.loss_weights = {k: float(v) for k, v in weights.__dict__.items()}
        self.loss_weights["n_labels"] = n_labels
        self.loss_weights["follow"] = o.follow
        self.noise = SeededStream(o.seed + 7)
        self.pools = {"gp": self.noise}       # saved with the training state, so resume is exact
        # Reported until the first generator update (the critic runs n_critic - 1 steps first).
        self.last_g = dict.fromkeys(GENERATOR_LOSSES, math.nan)

    @classmethod
    def build(cls, config: LomitConfig, o: RecipeOptions) -> LomitRecipe:
        """The classifier head predicts o.n_labels columns (the data's attributes)."""
        return cls(config, o, o.n_labels, CODE_WEIGHTS if following_code(o) else LomitWeights())

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x1, x2, y1, y2 = batch["A"], batch["B"], batch["label_A"], batch["label_B"]
        losses = self._critic_step(x1, x2, y1, y2)
        n = self.weights.n_critic
        if self.step_index % n == (0 if self.code else n - 1):
            self.last_g = self._generator_step(x1, x2, y1, y2)
        return {**self.last_g, **losses}

    def _critic_step(self, x1, x2, y1, y2) -> dict[str, float]:
        w = self.weights
        with torch.no_grad():
            fake12, fake21 = Halves(self.translator, x1, x2).crossed()
        if self.code:                   # each direction's terms, summed
            wasserstein, penalty, cls_real = (sum(terms) for terms in zip(
                self._critic_terms(x1, fake12, y1), self._critic_terms(x2, fake21, y2),
                strict=True))
        else:
            real, fake = torch.cat([x1, x2]), torch.cat([fake12, fake21])
            real_scores, real_logits = self.critic(real)
            fake_scores, _ = self.critic(fake)
            wasserstein = real_scores.mean() - fake_scores.mean()
            penalty = gradient_penalty(self.critic, real, fake, self.noise.generator)
            cls_real = F.binary_cross_entropy_with_logits(real_logits, torch.cat([y1, y2]))
        loss = -wasserstein + w.gp * penalty + w.cls * cls_real
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["D"].step()
        return {"D": loss.item(), "wasserstein": wasserstein.item(), "gp": penalty.item(),
                "cls_real": cls_real.item()}

    def _critic_terms(self, real, fake, labels) -> tuple[torch.Tensor, ...]:
        """(Wasserstein estimate, gradient penalty, classification loss) of one direction."""
        real_scores, real_logits = self.critic(real)
        fake_scores, _ = self.critic(fake)
        return (real_scores.mean() - fake_scores.mean(),
                gradient_penalty(self.critic, real, fake, self.noise.generator),
                summed_bce(real_logits, labels))

    def _generator_step(self, x1, x2, y1, y2) -> dict[str, float]:
        w = self.weights
        t = self.translator
        set_requires_grad([self.critic], False)
        h = Halves(t, x1, x2)
        x12, x21 = h.crossed()
        m11, m22 = h.self_masks() if self.code else (h.m1, h.m2)
        x11, x22 = h.own(m11, m22)
        back = Halves(t, x12, x21)                    # the translated pair, encoded again
        x121, x212 = back.crossed()

        scores, logits = self.critic(torch.cat([x12, x21]))
        if self.code:
            adv = -sum(part.mean() for part in scores.chunk(2))
            logits12, logits21 = logits.chunk(2)
            cls_fake = summed_bce(logits12, y2) + summed_bce(logits21, y1)
        else:
            adv = -scores.mean()
            cls_fake = F.binary_cross_entropy_with_logits(logits, torch.cat([y2, y1]))
        style = (F.l1_loss(back.f1, h.f2) + F.l1_loss(back.b1, h.b1)
                 + F.l1_loss(back.f2, h.f1) + F.l1_loss(back.b2, h.b2))
        content = F.l1_loss(back.c1, h.c1) + F.l1_loss(back.c2, h.c2)
        cycle = F.l1_loss(x121, x1) + F.l1_loss(x212, x2)
        rebuild = F.l1_loss(x11, x1) + F.l1_loss(x22, x2)
        # The paper regularises m1 and m2; the code also the translated pair's and self masks.
        masks1, masks2 = ([h.m1, back.m1, m11], [h.m2, back.m2, m22]) if self.code else \
            ([h.m1], [h.m2])
        r1 = (sum(content_consistency(m, h.c1) for m in masks1)
              + sum(content_consistency(m, h.c2) for m in masks2))
        r2 = -(h.f1 - h.f2).abs().mean()
        r3 = sum(m.mean() for m in masks1 + masks2)    # masks are >= 0: their L1 is the mean
        loss = (adv + w.cls * cls_fake + w.style_content * (style + content)
                + w.image * (cycle + rebuild) + w.r1 * r1 + w.r2 * r2 + w.r3 * r3)
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["G"].step()
        set_requires_grad([self.critic], True)
        return {"G": loss.item(), "adv": adv.item(), "cls_fake": cls_fake.item(),
                "style": style.item(), "content": content.item(), "cycle": cycle.item(),
                "rebuild": rebuild.item(), "r1": r1.item(), "r2": r2.item(),
                "mask_mean": 0.5 * (h.m1.mean() + h.m2.mean()).item()}

    @torch.no_grad()
    def sample_grid(self, fixed: dict[str, torch.Tensor], paired: bool, scale: int
                    ) -> Image.Image:
        """Columns: input, input mask, exemplar, exemplar mask, output; one row per pair."""
        out = self.translator(fixed["A"], fixed["B"])
        return exemplar_grid(fixed["A"], out["mask"], fixed["B"], out["exemplar_mask"],
                             out["translation"], scale)
