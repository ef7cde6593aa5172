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
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "none")


class SampleNorm(nn.BatchNorm2d):
    """BatchNorm in training; at inference per-sample statistics with BN's affine, or the running
    statistics when `running` (eval-mode BatchNorm). With a process `group` (data-parallel
    training, i2i/train/distributed.py) training statistics are those of every rank's rows."""

    def __init__(self, channels: int, running: bool = False):
        super().__init__(channels)
        self.running = running
        self.group = None       # a torch.distributed group; None: this process's batch alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.group is not None:
            return self._over_group(x)
        if self.training or self.running:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def _over_group(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm of (N, C, H, W) rows whose statistics span the group's rows: the mean, then
        the mean squared deviation from it (two passes: no E[x^2] - E[x]^2 cancellation), each
        summed over the ranks by a differentiable all-reduce, so gradients flow across ranks as
        they do within one batch."""
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        total = _GroupSum.apply(torch.cat([x.sum((0, 2, 3)), count]), self.group)
        n = total[-1]
        mean = total[:-1] / n                                           # (C,)
        centred = x - mean.view(1, -1, 1, 1)
        var = _GroupSum.apply((centred * centred).sum((0, 2, 3)), self.group) / n
        if self.track_running_stats:            # as BatchNorm: unbiased variance in the average
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        scale = self.weight / torch.sqrt(var + self.eps)                # (C,)
        return centred * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _GroupSum(torch.autograd.Function):
    """The sum of a tensor over a process group's ranks; the gradient of each rank's input is
    the sum of every rank's output gradient (each rank's loss depends on every input): the
    same sum, applied as this Function again so that a double backward (a gradient penalty
    through a batch norm) differentiates it too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _GroupSum.apply(grad, ctx.group), None


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
