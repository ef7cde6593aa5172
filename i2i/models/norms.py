"""The normalisation layers generators choose from, named as the reference code's `--norm`.

- instance: InstanceNorm2d without affine or running statistics; each sample is normalised with
  its own statistics in training and inference alike, so batching never changes a result.
- batch: BatchNorm2d (`SampleNorm`). Training uses batch statistics. Inference uses, per the
  model's `running_stats` setting, either each sample's own statistics with BN's affine (what the
  reference's test script computes at batch 1 in train mode, and independent of batching) or the
  running statistics (the reference's `--eval`).
- none: no normalisation.

As in the reference, a convolution followed by a norm carries a bias exactly when the norm is
`instance` (`conv_bias`): BatchNorm's shift makes a bias redundant, and the reference's `none`
leaves it out as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "none")


class SampleNorm(nn.BatchNorm2d):
    """BatchNorm in training; at inference per-sample statistics with BN's affine, or the running
    statistics when `running` (eval-mode BatchNorm)."""

    def __init__(self, channels: int, running: bool = False):
        super().__init__(channels)
        self.running = running

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.running:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


def norm_layer(norm: str, channels: int, running: bool = False) -> nn.Module:
    """The normalisation module `norm` names, for `channels` channels."""
    check_norm(norm)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return SampleNorm(channels, running)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Whether a convolution followed by `norm` has a bias (the reference's use_bias)."""
    return norm == "instance"
