"""GAN objectives and the image replay buffer."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

GanLoss = Callable[[torch.Tensor, bool], torch.Tensor]
GP_WEIGHT = 10.0        # the WGAN-GP paper's lambda, the reference code's default


def lsgan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (D(x) - 1)^2 for real, mean D(x)^2 for fake."""
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def bce_gan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """The original (vanilla) GAN loss on logits, as pix2pix uses it."""
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.binary_cross_entropy_with_logits(prediction, target)


def wgan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Wasserstein critic loss: -mean D(x) for real, mean D(x) for fake."""
    return -prediction.mean() if real else prediction.mean()


GAN_MODES: dict[str, GanLoss] = {"lsgan": lsgan, "vanilla": bce_gan, "wgangp": wgan}


def gan_loss(mode: str) -> GanLoss:
    """The loss of a --gan-mode; ValueError naming the modes for anything else."""
    if mode not in GAN_MODES:
        raise ValueError(f"unknown --gan-mode {mode!r}; known: {', '.join(GAN_MODES)}")
    return GAN_MODES[mode]


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """GP_WEIGHT x mean (||grad D(u)|| - 1)^2 at u = a real + (1 - a) fake, a ~ U(0, 1) per image
    (Gulrajani et al.; the reference code's "mixed" penalty); a from `generator`."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    grad, = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
    return GP_WEIGHT * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class ImagePool:
    """A buffer of past generated images (Shrivastava et al.), used with probability 0.5.

    Until `size` images are stored, every image is stored and returned as is. Afterwards each
    image is, with probability 0.5, swapped with a random stored one (the stored one is
    returned). Randomness comes from the pool's own generator so that resume is exact.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, batch: torch.Tensor) -> torch.Tensor:   # (B, C, H, W)
        if self.size == 0:
            return batch
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> dict[str, torch.Tensor]:
        state = {"rng": self.generator.get_state()}
        if self.images:
            state["images"] = torch.stack(self.images)
        return state

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        self.generator.set_state(state["rng"])
        self.images = list(state["images"].to(device).unbind(0)) if "images" in state else []


class SeededStream:
    """A torch.Generator kept in the training state like a pool: recipes draw their own
    random numbers from it (LOMIT's gradient-penalty mix, Mask CycleGAN's masks)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def state(self) -> dict[str, torch.Tensor]:
        return {"rng": self.generator.get_state()}

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        self.generator.set_state(state["rng"])
