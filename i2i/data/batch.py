"""The batch protocol every dataset follows, and the batch order they share.

Every dataset answers `batch(step, batch_size, seed)` as a pure function of its arguments and
the data it reads, so a resumed run sees exactly the batches it would have seen. The order is
epoch-based: in epoch e the images are visited in `torch.randperm(n)` order under a generator
seeded from (seed, stream, e); batch `step` takes positions step * batch_size ... onwards,
wrapping into the next epoch. Crop and flip come from a generator seeded from (seed, step,
position in batch), shared by A and B of a pair.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import torch

from .shapes import stable_seed

# Streams mixed into seeds so A order, B order and augmentation never share random numbers.
STREAM_A, STREAM_B, STREAM_AUG = 0, 1, 2
PAIR = 2  # augmentation "domain" shared by A and B of a pair


class DataError(ValueError):
    """A data root or spec that cannot be used; the message says what was expected."""


class BatchData(Protocol):
    """What the training loop needs from any dataset."""

    paired: bool    # True when A[i] and B[i] correspond
    labelled: bool  # True when batches carry "label_A"/"label_B" (N, K) floats
    def describe(self) -> dict: ...
    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]: ...


@lru_cache(maxsize=16)
def _epoch_order(n: int, seed: int, stream: int, epoch: int) -> torch.Tensor:
    """(n,) int64: the visiting order of epoch `epoch`; cached because batches reuse it."""
    generator = torch.Generator().manual_seed(stable_seed(seed, stream, epoch))
    return torch.randperm(n, generator=generator)


def batch_indices(n: int, step: int, batch_size: int, seed: int, stream: int) -> list[int]:
    """Dataset indices for batch `step`: positions step*batch_size ... of the epoch sequence."""
    if n < 1:
        raise ValueError("cannot draw batches from an empty dataset")
    if step < 0 or batch_size < 1:
        raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        out.append(int(_epoch_order(n, seed, stream, epoch)[pos]))
    return out


def aug_generator(seed: int, step: int, position: int, domain: int) -> torch.Generator:
    """The crop/flip generator of one image of a batch (domain PAIR for both halves of a pair)."""
    return torch.Generator().manual_seed(stable_seed(seed, STREAM_AUG, step, position, domain))


class Reversed:
    """A dataset with its two domains swapped (--direction BtoA): batches' "A" is the data's B.
    Pairs stay pairs; a labelled dataset's labels swap with their images."""

    def __init__(self, data: BatchData) -> None:
        self.data = data
        self.paired, self.labelled = data.paired, data.labelled

    def __len__(self) -> int:
        return len(self.data)

    def describe(self) -> dict:
        return {**self.data.describe(), "direction": "BtoA"}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        out = self.data.batch(step, batch_size, seed)
        swap = {"A": "B", "B": "A", "label_A": "label_B", "label_B": "label_A"}
        return {swap.get(k, k): v for k, v in out.items()}
