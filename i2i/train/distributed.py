"""Data-parallel training over ranks launched by torchrun (gloo on CPUs, NCCL on GPUs).

    torchrun --nproc-per-node 2 -m i2i.train.cli --model cyclegan --batch-size 8 --out runs/x
    i2i-train --nproc 2 --model cyclegan --batch-size 8 --out runs/x      (launches the above)

What N ranks at per-rank batch B compute, and why it is one process at batch N x B:

- Data: every rank draws batch(step, N x B, seed) (a pure function, i2i/data/batch.py) and keeps
  rows rank x B ... (rank + 1) x B, so the ranks together see exactly the images, crops and
  flips of the one-process batch. Each rank decodes the whole batch; the synthetic shapes cost
  nothing, a folder of photos costs N decodes of each picture (a data-loading limit, not a
  correctness one).
- Gradients: every loss is a mean over its batch, so the mean over ranks of each rank's gradient
  is the gradient of the N x B batch. It is taken where every recipe agrees: a pre-hook on each
  optimiser's step all-reduces the gradients of that optimiser's parameters (one flat tensor).
  The recipes are not wrapped in DistributedDataParallel: they call sub-networks' methods
  (`translator.generator`, CUT's `nce_features`), run a network several times per backward,
  freeze discriminators between steps and take double-backward gradient penalties, none of
  which DDP's forward-bound reducer follows; averaging at the step needs none of that.
- Batch norm (pix2pix's SampleNorm, its discriminator's): statistics over all ranks' rows
  (models/norms.py, `group`), differentiable, so a rank's normalised rows and the gradients are
  those of the N x B batch. torch's SyncBatchNorm is not used: it runs on GPUs only and would
  replace SampleNorm, losing its per-sample inference.
- Replay pools (ImagePool): one pool, the same on every rank: each query gathers the ranks'
  fakes in rank order, queries the pool with all N x B of them, and keeps the rank's rows. The
  pool's generator draws what one process's would, so pools match one process exactly.
- Seeded streams (masks, gradient-penalty mixes, UNIT's noise, CUT's patch ids) and the torch
  generator (dropout) are the same on every rank and draw for B rows: draws of one number per
  step (CUT's flip and patch ids) match one process; per-row draws repeat across ranks (rank r's
  row i gets rank 0's row i's mask or noise), where one process at N x B draws N x B different
  ones. Those recipes train correctly but match one process only in distribution.

Every rank holds the same networks, optimiser moments, pools and generators after every step,
so rank 0 alone writes logs, samples and checkpoints, and its training state resumes every rank
exactly. The run folder must be one every rank can read (a shared disk across nodes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..models.norms import SampleNorm
from .losses import ImagePool
from .recipe import Recipe


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks; Ranks() is one process alone."""

    rank: int = 0
    size: int = 1
    local: int = 0      # the rank on its node: the GPU it uses
    owner: bool = False # join() made the process group, so leave() ends it

    @property
    def writer(self) -> bool:
        """Rank 0 writes the run folder; the others only train."""
        return self.rank == 0

    def rows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's rows of the N x B batch every rank drew: (N x B, ...) -> (B, ...)."""
        if self.size == 1:
            return batch
        share = next(iter(batch.values())).shape[0] // self.size
        return {k: v[self.rank * share:(self.rank + 1) * share] for k, v in batch.items()}

    def wait(self) -> None:
        """Until every rank gets here."""
        if self.size > 1:
            dist.barrier()

    def mean(self, losses: dict[str, float]) -> dict[str, float]:
        """The mean of each loss over the ranks: the N x B batch's loss (every loss is a mean)."""
        if self.size == 1:
            return losses
        values = torch.tensor(list(losses.values()), dtype=torch.float64)
        dist.all_reduce(values)
        return {k: float(v) / self.size for k, v in zip(losses, values, strict=True)}


def join(device: str) -> tuple[Ranks, str]:
    """(Ranks, device) of this process: the process group torchrun's environment describes
    (WORLD_SIZE, RANK, LOCAL_RANK), NCCL with one GPU per rank where the device is CUDA, gloo
    otherwise; (Ranks(), device) when not launched by torchrun. A process group the caller
    made already is used as it is (and left to the caller to end)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return Ranks(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if gpu:
        if torch.cuda.device_count() <= local:
            raise ValueError(f"rank {rank} needs GPU {local}, but this node has "
                             f"{torch.cuda.device_count()}; launch at most that many ranks "
                             "per node, or train on the CPU with --device cpu")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    else:
        device = "cpu"
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group("nccl" if gpu else "gloo")
    return Ranks(rank, size, local, owner), device


def leave(ranks: Ranks) -> None:
    if ranks.owner and dist.is_initialized():
        dist.destroy_process_group()


def share(recipe: Recipe, ranks: Ranks) -> None:
    """Make `recipe` train as one process at N x B: gradients averaged at each optimiser step,
    batch norms over every rank's rows, replay pools queried with every rank's images."""
    if ranks.size == 1:
        return
    for opt in recipe.optimizers.values():
        opt.register_step_pre_hook(_average_gradients)
    for net in recipe.nets.values():
        sync_batch_norms(net, dist.group.WORLD)
    for name, pool in recipe.pools.items():
        if isinstance(pool, ImagePool):
            recipe.pools[name] = SharedPool(pool, ranks)


def sync_batch_norms(net: nn.Module, group) -> int:
    """Point every SampleNorm of `net` at `group` (statistics over all its ranks in training);
    returns how many."""
    norms = [m for m in net.modules() if isinstance(m, SampleNorm)]
    for m in norms:
        m.group = group
    return len(norms)


def _average_gradients(opt: torch.optim.Optimizer, args, kwargs) -> None:
    """All-reduce the gradients of `opt`'s parameters and divide by the ranks. Every rank runs
    the same code, so the same parameters hold gradients in the same order on each."""
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class SharedPool:
    """An ImagePool queried with every rank's images: (B, C, H, W) per rank -> gathered
    (N x B, ...) in rank order -> the pool -> this rank's B rows. Every rank holds the same pool
    and generator, so rank 0's saved state is everyone's."""

    def __init__(self, pool: ImagePool, ranks: Ranks) -> None:
        self.pool, self.ranks = pool, ranks

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(batch) for _ in range(self.ranks.size)]
        dist.all_gather(parts, batch.detach().contiguous())
        out = self.pool.query(torch.cat(parts))
        share = batch.shape[0]
        return out[self.ranks.rank * share:(self.ranks.rank + 1) * share]

    def state(self) -> dict[str, torch.Tensor]:
        return self.pool.state()

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        self.pool.load(state, device)
