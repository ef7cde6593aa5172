"""Paired metrics: a generated picture against the target it should equal, pixel by pixel.

For paired data (pix2pix's aligned A|B pictures, or two folders whose file names match). Each
metric is computed per picture on 8-bit RGB values (0..255) and averaged over the pictures.

- pixel accuracy: the share of pixels whose colour is within `tolerance` levels of the
  target's in every channel: max(|dR|, |dG|, |dB|) <= tolerance (default 16 of 255). Papers
  report map <-> aerial pixel accuracies with thresholds of their own (pix2pix 0.85, CycleGAN
  0.57, UNIT 0.6 on maps, as often quoted); compare numbers measured at the same tolerance only.
- PSNR: 10 log10(255^2 / MSE), the MSE over the picture's pixels and channels; identical
  pictures give infinity.
- SSIM (Wang et al. 2004): on each channel, the local means, variances and covariance under an
  11 x 11 Gaussian window (sigma 1.5), only where the window fits inside the picture, with
  C1 = (0.01 * 255)^2 and C2 = (0.03 * 255)^2; the mean over positions and channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TOLERANCE = 16                  # 8-bit levels per channel for pixel accuracy
PEAK = 255.0
WINDOW, SIGMA = 11, 1.5
C1, C2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2


class PairError(ValueError):
    """A generated picture and its target that cannot be compared."""


def _check(generated: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if generated.shape != target.shape:
        g, t = generated.shape, target.shape
        raise PairError(f"{name}: the generated picture is {g[-1]}x{g[-2]} and its target "
                        f"{t[-1]}x{t[-2]}; paired metrics compare pictures of one size "
                        f"(translate at the target's size, or resize one of them)")


def pixel_accuracy(generated: torch.Tensor, target: torch.Tensor,
                   tolerance: int = TOLERANCE) -> float:
    """Share of pixels of (3, H, W) uint8 pictures with every channel within `tolerance`."""
    diff = (generated.int() - target.int()).abs().amax(dim=0)              # (H, W)
    return float((diff <= tolerance).double().mean())


def psnr(generated: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of (3, H, W) uint8 pictures (peak 255); inf when they are equal."""
    mse = (generated.double() - target.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(PEAK ** 2 / mse)


def _window() -> torch.Tensor:
    """(1, 1, 11, 11) float64 Gaussian weights (sigma 1.5) summing to 1."""
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-x.square() / (2 * SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(generated: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM of (3, H, W) uint8 pictures, H and W at least 11."""
    h, w = generated.shape[-2:]
    if h < WINDOW or w < WINDOW:
        raise PairError(f"SSIM's {WINDOW}x{WINDOW} window needs pictures of at least "
                        f"{WINDOW}x{WINDOW} pixels, got {w}x{h}")
    x = generated.double()[:, None]                                 # (3, 1, H, W)
    y = target.double()[:, None]
    window = _window()
    mean = lambda t: F.conv2d(t, window)                            # (3, 1, H-10, W-10)
    mx, my = mean(x), mean(y)
    vx = mean(x * x) - mx * mx
    vy = mean(y * y) - my * my
    cov = mean(x * y) - mx * my
    index = ((2 * mx * my + C1) * (2 * cov + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return float(index.mean())


@dataclass
class PairedTotals:
    """Per-picture paired metrics, summed as pictures come; means() at the end."""

    tolerance: int = TOLERANCE
    values: dict[str, list[float]] = field(default_factory=lambda: {
        "pixel_accuracy": [], "psnr": [], "ssim": []})

    def add(self, generated: torch.Tensor, target: torch.Tensor, name: str) -> None:
        """One (3, H, W) uint8 pair; `name` names it in errors."""
        _check(generated, target, name)
        self.values["pixel_accuracy"].append(pixel_accuracy(generated, target, self.tolerance))
        self.values["psnr"].append(psnr(generated, target))
        self.values["ssim"].append(ssim(generated, target))

    @property
    def count(self) -> int:
        return len(self.values["psnr"])

    def means(self) -> dict | None:
        """{"pairs", "pixel_accuracy", "tolerance", "psnr", "ssim"}; None without pairs."""
        if not self.count:
            return None
        means = {k: sum(v) / len(v) for k, v in self.values.items()}
        return {"pairs": self.count, "pixel_accuracy": means["pixel_accuracy"],
                "tolerance": self.tolerance, "psnr": means["psnr"], "ssim": means["ssim"]}
