"""UNIT's training objective (Liu, Breuel, Kautz 2017), as NVIDIA's public code trains it
(trainer.py UNIT_Trainer, configs/unit_*.yaml).

Two VAE-GANs: encoders E_A, E_B and decoders G_A, G_B. Each step updates the discriminators
first, then the generators (the code's dis_update, gen_update), each on its own draw of
unit-variance noise n added to the latent codes z = E(x):

    reconstruction   L1(G_A(z_a + n), x_a) + L1(G_B(z_b + n), x_b)               x recon_x_w
    KL               mean(z_a^2) + mean(z_b^2)                                   x recon_kl_w
    cycle            L1(G_A(E_B(x_ab) + n), x_a) + the same for b                x recon_x_cyc_w
    cycle KL         mean(E_B(x_ab)^2) + mean(E_A(x_ba)^2)                       x recon_kl_cyc_w
    GAN              LSGAN on x_ab = G_B(z_a + n), x_ba = G_A(z_b + n), summed over the
                     discriminators' scales                                      x gan_w

The "KL" is the code's: with the variance fixed at one, KL(N(z, 1) || N(0, 1)) is, up to a
constant, half the squared mean. The noise comes from the recipe's own seeded stream, saved
with the training state, so a resumed run draws what a straight one would.

The recipe's translator holds E_A and G_B (A -> B), its reverse E_B and G_A (B -> A): every
network is in exactly one of the two checkpoints a step writes.

--follow code (the default) builds the networks of the public code, which share no weights
between the domains (networks.py VAEGen). --follow paper ties the encoders' last residual block
and the decoders' first into one module per pair, the paper's shared-latent weight sharing (as
the 2017 version of the code, cocogan_nets.py, did with one shared block on each side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.unit import UnitConfig, UnitTranslator
from .losses import SeededStream, lsgan
from .recipe import Recipe, RecipeOptions, following_code, set_requires_grad

SCALES = 3                          # the code's dis.num_scales
WEIGHT_DECAY = 1e-4                 # the code's weight_decay, on both Adams


@dataclass(frozen=True)
class UnitWeights:
    """The loss weights of configs/unit_*.yaml."""

    gan_w: float = 1.0
    recon_x_w: float = 10.0
    recon_kl_w: float = 0.01
    recon_x_cyc_w: float = 10.0
    recon_kl_cyc_w: float = 0.01


def unit_config(o: RecipeOptions) -> UnitConfig:
    following_code(o)                   # a --follow other than paper or code fails here
    return UnitConfig(ngf=o.ngf, n_res=o.n_blocks)


class MultiScaleDiscriminator(nn.Module):
    """UNIT's discriminator (the public code's MsImageDis): the same plain conv net at `scales`
    resolutions, each an average-pooled half of the previous one.

    Per scale: `layers` x (reflect pad 1, conv4 stride 2, LeakyReLU 0.2), widths ndf, 2 ndf, ...,
    no norm, then a 1x1 conv to one score per patch. Between scales: 3x3 average pooling, stride
    2, padding 1, the padding left out of the average. forward(x) -> a list of `scales` score
    maps, (N, 1, H / 2^(s + layers), ...) for scale s.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 4, scales: int = 3):
        super().__init__()
        self.scales = nn.ModuleList([self._net(in_channels, ndf, layers) for _ in range(scales)])
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    @staticmethod
    def _net(in_channels: int, ndf: int, layers: int) -> nn.Sequential:
        body: list[nn.Module] = []
        channels, out = in_channels, ndf
        for _ in range(layers):
            body += [nn.Conv2d(channels, out, 4, 2, 1, padding_mode="reflect"),
                     nn.LeakyReLU(0.2)]
            channels, out = out, out * 2
        return nn.Sequential(*body, nn.Conv2d(channels, 1, 1))

    @staticmethod
    def smallest(layers: int, scales: int) -> int:
        """The smallest H and W it takes: every conv's input at least 2 pixels (reflect pad)."""
        return 2 ** (layers + scales - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        scores = []
        for index, net in enumerate(self.scales):
            if index:
                x = self.pool(x)
            scores.append(net(x))
        return scores


def code_init(generators: list[nn.Module], discriminators: list[nn.Module]) -> None:
    """The code's initialisation: He-normal (fan in) convolutions in the generators, N(0, 0.02)
    in the discriminators, zero biases; the LN scales uniform in [0, 1), shifts zero."""
    for net in generators:
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.uniform_(module.weight)
                nn.init.zeros_(module.bias)
    for net in discriminators:
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)


def share_latent_layers(translator: UnitTranslator, reverse: UnitTranslator) -> None:
    """The paper's weight sharing: E_A and E_B end with one residual block, G_A and G_B start
    with one. Each checkpoint keeps its own copy; training updates the one module."""
    if not translator.config.n_res:
        raise ValueError("--follow paper shares a residual block between the domains: "
                         "it needs --n-blocks of at least 1")
    reverse.encoder.blocks[-1] = translator.encoder.blocks[-1]
    translator.decoder.blocks[0] = reverse.decoder.blocks[0]


def multiscale_lsgan(scores: list[torch.Tensor], real: bool) -> torch.Tensor:
    """LSGAN summed over the discriminator's scales (the code's calc_*_loss)."""
    return sum(lsgan(s, real) for s in scores)


def mean_square(z: torch.Tensor) -> torch.Tensor:
    return z.pow(2).mean()


class UnitRecipe(Recipe):

    def __init__(self, config: UnitConfig, o: RecipeOptions,
                 weights: UnitWeights = UnitWeights()):
        if o.disc != "patch":
            raise ValueError(f"--disc {o.disc} does not apply to unit: it trains with the "
                             "reference code's multi-scale discriminator (--disc-layers sets "
                             "its layers per scale)")
        smallest = MultiScaleDiscriminator.smallest(o.disc_layers, SCALES)
        if o.size < smallest:
            raise ValueError(f"--size {o.size} is too small for unit's discriminator: "
                             f"{SCALES} scales of {o.disc_layers} halvings need at least "
                             f"{smallest} pixels; use --size {smallest} or fewer "
                             "--disc-layers")
        self.translator = UnitTranslator(config)            # E_A, G_B
        self.reverse = UnitTranslator(config)               # E_B, G_A
        self.shared = not following_code(o)
        if self.shared:
            share_latent_layers(self.translator, self.reverse)
        self.d_a = MultiScaleDiscriminator(config.channels, o.ndf, o.disc_layers, SCALES)
        self.d_b = MultiScaleDiscriminator(config.channels, o.ndf, o.disc_layers, SCALES)
        code_init([self.translator, self.reverse], [self.d_a, self.d_b])
        self.nets = {"G_AB": self.translator, "G_BA": self.reverse, "D_A": self.d_a,
                     "D_B": self.d_b}
        # dict.fromkeys: a shared block's parameters once, in a fixed order.
        generator_params = list(dict.fromkeys([*self.translator.parameters(),
                                               *self.reverse.parameters()]))
        self.optimizers = {
            "G": torch.optim.Adam(generator_params, lr=o.lr, betas=o.betas,
                                  weight_decay=WEIGHT_DECAY),
            "D": torch.optim.Adam([*self.d_a.parameters(), *self.d_b.parameters()], lr=o.lr,
                                  betas=o.betas, weight_decay=WEIGHT_DECAY)}
        self.noise = SeededStream(o.seed + 13)
        self.pools = {"noise": self.noise}     # saved with the training state: resume is exact
        self.weights = weights
        self.loss_weights = {**asdict(weights), "weight_decay": WEIGHT_DECAY,
                             "follow": o.follow, "shared_layers": self.shared}

    def _noisy(self, z: torch.Tensor) -> torch.Tensor:
        """z plus N(0, 1) noise from the recipe's stream (drawn on the CPU, then moved)."""
        return z + torch.randn(z.shape, generator=self.noise.generator).to(z.device, z.dtype)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x_a, x_b = batch["A"], batch["B"]
        d_loss = self._discriminator_step(x_a, x_b)
        losses = self._generator_losses(x_a, x_b)
        self.optimizers["G"].zero_grad(set_to_none=True)
        losses["G"].backward()
        self.optimizers["G"].step()
        return {**{k: v.item() for k, v in losses.items()}, "D": d_loss}

    def _discriminator_step(self, x_a: torch.Tensor, x_b: torch.Tensor) -> float:
        e_a, g_b = self.translator.encoder, self.translator.decoder
        e_b, g_a = self.reverse.encoder, self.reverse.decoder
        with torch.no_grad():
            x_ab, x_ba = g_b(self._noisy(e_a(x_a))), g_a(self._noisy(e_b(x_b)))
        set_requires_grad([self.d_a, self.d_b], True)
        opt = self.optimizers["D"]
        opt.zero_grad(set_to_none=True)
        loss = self.weights.gan_w * (
            multiscale_lsgan(self.d_a(x_ba), False) + multiscale_lsgan(self.d_a(x_a), True)
            + multiscale_lsgan(self.d_b(x_ab), False) + multiscale_lsgan(self.d_b(x_b), True))
        loss.backward()
        opt.step()
        return loss.item()

    def _generator_losses(self, x_a: torch.Tensor, x_b: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
        w = self.weights
        e_a, g_b = self.translator.encoder, self.translator.decoder
        e_b, g_a = self.reverse.encoder, self.reverse.decoder
        z_a, z_b = e_a(x_a), e_b(x_b)                        # (N, latent, H/4, W/4)
        noisy_a, noisy_b = self._noisy(z_a), self._noisy(z_b)
        x_aa, x_bb = g_a(noisy_a), g_b(noisy_b)              # within each domain
        x_ab, x_ba = g_b(noisy_a), g_a(noisy_b)              # across
        z_ab, z_ba = e_b(x_ab), e_a(x_ba)                    # encoded again
        x_aba, x_bab = g_a(self._noisy(z_ab)), g_b(self._noisy(z_ba))
        set_requires_grad([self.d_a, self.d_b], False)
        gan = multiscale_lsgan(self.d_a(x_ba), True) + multiscale_lsgan(self.d_b(x_ab), True)
        recon = F.l1_loss(x_aa, x_a) + F.l1_loss(x_bb, x_b)
        kl = mean_square(z_a) + mean_square(z_b)
        cycle = F.l1_loss(x_aba, x_a) + F.l1_loss(x_bab, x_b)
        kl_cycle = mean_square(z_ab) + mean_square(z_ba)
        total = (w.gan_w * gan + w.recon_x_w * recon + w.recon_kl_w * kl
                 + w.recon_x_cyc_w * cycle + w.recon_kl_cyc_w * kl_cycle)
        return {"G": total, "gan": gan, "recon": recon, "kl": kl, "cycle": cycle,
                "kl_cycle": kl_cycle}
