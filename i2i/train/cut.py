"""CUT and FastCUT (Park et al. 2020): one generator A -> B trained with LSGAN and PatchNCE.

PatchNCE: the encoder features of the input and of its translation at the same positions should
match, and differ from the translation's features elsewhere in the same image. For each feature
layer of CUTGenerator.nce_features (the reference's nce_layers 0,4,8,12,16):
    positions  NCE_PATCHES (256) positions drawn at random, the same for every image of the batch
               and for the input and the translation (as the reference's PatchSampleF)
    projection a 2-layer MLP (C -> 256, ReLU, 256 -> 256) per layer, then L2 normalisation
    loss       per position, cross-entropy of [q.k+, q.k- ...] / tau picking k+, where q is the
               translation's feature, k+ the input's at the same position and k- the input's
               at the other drawn positions of the same image (negatives never cross images:
               the reference's nce_includes_all_negatives_from_minibatch False); the input's
               side is detached; the mean over positions and images, times lambda_NCE, averaged
               over the layers
Generator loss: lambda_GAN x LSGAN + PatchNCE(x, G(x)), and for CUT the identity term:
(PatchNCE(x, G(x)) + PatchNCE(y, G(y))) / 2. The discriminator (the 3-layer PatchGAN with the
generator's anti-aliased downsampling, as the reference's; LSGAN; no replay pool) is updated
first, then the generator and the projection heads.

    CUT      lambda_NCE 1, identity PatchNCE
    FastCUT  lambda_NCE 10, no identity term, flip equivariance: with probability 0.5 per step
             the generator's input batch is flipped left-right, and the translation's features
             are flipped back before they are compared with those of the unflipped input (the
             discriminator sees the flipped translation; real B is never flipped)

The reference creates the MLPs at the first batch (their input widths are known only then); i2i
creates them with the generator, from its channel counts, so the optimiser holds them from step
0 and resume restores them like any other network. Positions and flips come from the recipe's
own seeded stream (`pools["patches"]`), kept in the training state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.cut import BlurDown, CUTConfig, CUTTranslator
from ..models.discriminators import PatchGAN
from .losses import SeededStream, lsgan
from .recipe import Recipe, RecipeOptions, adam, d_step, discriminator, set_requires_grad

NCE_TAU = 0.07              # the reference's nce_T
NCE_PATCHES = 256           # positions per layer (num_patches)
HEAD_UNITS = 256            # the projection MLP's width (netF_nc)
LAMBDA_GAN = 1.0
LAMBDA_NCE = {"cut": 1.0, "fastcut": 10.0}
SELF_SIMILAR = -10.0        # the reference's logit for a position against itself, before / tau


def cut_config(o: RecipeOptions) -> CUTConfig:
    return CUTConfig(ngf=o.ngf, n_blocks=o.n_blocks)


def antialiased(d: nn.Module) -> nn.Module:
    """CUT's discriminator made from the shared one: in a PatchGAN each stride-2 conv becomes a
    stride-1 conv whose LeakyReLU (after its norm) is followed by BlurDown, the [1, 2, 1]
    blur-then-stride-2 of the generator, as the reference's discriminator downsamples:
    (N, C, 256, 256) -> (N, 1, 30, 30), as the plain one. The layers are the PatchGAN's own, in
    its order, so parameters and state_dict keys (net.<index>, the blurs holding no weights)
    are as built before; any other discriminator (--disc dcgan) is returned as it is."""
    if not isinstance(d, PatchGAN):
        return d
    layers: list[nn.Module] = []
    strided = None                              # channels of a conv whose stride was taken
    for layer in d.net:
        if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2):
            layer.stride, strided = (1, 1), layer.out_channels
        layers.append(layer)
        if isinstance(layer, nn.LeakyReLU) and strided is not None:
            layers.append(BlurDown(strided))
            strided = None
    d.net = nn.Sequential(*layers)
    return d


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """x / (||x|| + 1e-7) over the last dimension (the reference's Normalize)."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float = NCE_TAU) -> torch.Tensor:
    """Mean PatchNCE loss of queries q against keys k, both (B, P, D) and L2-normalised; the
    negatives of each query are the other P - 1 keys of its own image. Returns a scalar."""
    k = k.detach()
    positive = (q * k).sum(-1, keepdim=True)                      # (B, P, 1)
    negative = q @ k.transpose(1, 2)                              # (B, P, P)
    eye = torch.eye(q.shape[1], dtype=torch.bool, device=q.device)
    negative = negative.masked_fill(eye, SELF_SIMILAR)            # itself is not a negative
    logits = torch.cat([positive, negative], dim=2) / tau         # (B, P, 1 + P)
    target = torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.flatten(0, 1), target)


class PatchHead(nn.Module):
    """One projection MLP per PatchNCE layer: (B, P, C_l) -> (B, P, HEAD_UNITS), normalised."""

    def __init__(self, channels: list[int], units: int = HEAD_UNITS):
        super().__init__()
        self.mlps = nn.ModuleList([nn.Sequential(nn.Linear(c, units), nn.ReLU(),
                                                 nn.Linear(units, units)) for c in channels])

    def forward(self, layer: int, patches: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.mlps[layer](patches))


def gather_patches(feature: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) at flat positions ids (P,) -> (B, P, C)."""
    return feature.flatten(2)[:, :, ids].transpose(1, 2)


class CUTRecipe(Recipe):
    one_way = ("cut trains one generator, A -> B, whose PatchNCE loss needs no reverse "
               "generator; train B -> A as a run of its own with the domains swapped "
               "(synthetic:square2circle, or trainA and trainB exchanged)")

    def __init__(self, config: CUTConfig, o: RecipeOptions):
        fastcut = o.switches.get("fastcut", False)
        variant = "fastcut" if fastcut else "cut"
        self.translator = CUTTranslator(config)
        self.head = PatchHead(self.translator.generator.nce_channels())
        self.d = antialiased(discriminator(o))
        self.nets = {"G": self.translator, "F": self.head, "D": self.d}
        self.optimizers = {"G": adam(self.translator.parameters(), o),
                           "F": adam(self.head.parameters(), o),
                           "D": adam(self.d.parameters(), o)}
        self.stream = SeededStream(o.seed + 31)
        self.pools = {"patches": self.stream}
        self.identity = not fastcut                # the reference's nce_idt
        self.flip = fastcut                        # its flip_equivariance
        self.loss_weights = {"variant": variant, "lambda_gan": LAMBDA_GAN,
                             "lambda_nce": LAMBDA_NCE[variant], "nce_identity": self.identity,
                             "flip_equivariance": self.flip, "nce_tau": NCE_TAU,
                             "nce_patches": NCE_PATCHES}

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["A"], batch["B"]
        g = self.translator.generator
        real = torch.cat([x, y]) if self.identity else x
        flipped = self.flip and bool(torch.rand((), generator=self.stream.generator) < 0.5)
        fake = g(real.flip(3) if flipped else real)
        fake_y = fake[:len(x)]
        set_requires_grad([self.d], True)
        d_loss = d_step(self.optimizers["D"], [(self.d, y, fake_y)], lsgan)
        set_requires_grad([self.d], False)
        gan = LAMBDA_GAN * lsgan(self.d(fake_y), True)
        nce = self.nce(x, fake_y, flipped)
        losses = {"gan": gan.item(), "nce": nce.item()}
        if self.identity:
            nce_y = self.nce(y, fake[len(x):], flipped)
            losses["nce_identity"] = nce_y.item()
            nce = 0.5 * (nce + nce_y)
        g_loss = gan + nce
        for name in ("G", "F"):
            self.optimizers[name].zero_grad(set_to_none=True)
        g_loss.backward()
        for name in ("G", "F"):
            self.optimizers[name].step()
        return {"G": g_loss.item(), **losses, "D": d_loss}

    def nce(self, source: torch.Tensor, translated: torch.Tensor, flipped: bool) -> torch.Tensor:
        """PatchNCE of `translated` (made from `source`, flipped left-right when `flipped`)
        against `source`: lambda_NCE x the mean over layers of each layer's mean loss."""
        g = self.translator.generator
        queries = g.nce_features(translated)
        if flipped:                              # back into the unflipped source's frame
            queries = [q.flip(3) for q in queries]
        keys = g.nce_features(source)
        total = translated.new_zeros(())
        for layer, (q, k) in enumerate(zip(queries, keys, strict=True)):
            positions = k.shape[2] * k.shape[3]
            ids = torch.randperm(positions, generator=self.stream.generator)
            ids = ids[:min(NCE_PATCHES, positions)].to(k.device)
            total = total + patch_nce(self.head(layer, gather_patches(q, ids)),
                                      self.head(layer, gather_patches(k, ids)))
        return self.loss_weights["lambda_nce"] * total / len(keys)
