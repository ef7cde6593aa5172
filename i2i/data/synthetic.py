"""The synthetic shapes (i2i.data.shapes) as a dataset following the batch protocol."""

from __future__ import annotations

import torch

from .batch import STREAM_A, STREAM_B, DataError, batch_indices
from .preprocess import Preprocess, refuse_preprocess
from .shapes import TASKS, SyntheticShapes


class SyntheticData:
    """The batch protocol over SyntheticShapes; no crop or flip (positions are already random)."""

    labelled = False

    def __init__(self, task: str, size: int, paired: bool, seed: int = 0, split: str = "train",
                 length: int = 1000, noise: float = 0.04) -> None:
        try:
            self.shapes = SyntheticShapes(task, size, split, paired, seed, length, noise)
        except ValueError as exc:  # unknown task or split, bad size: report it as a data error
            raise DataError(str(exc)) from exc
        self.paired = bool(paired)

    @classmethod
    def open(cls, source: str, size: int, paired: bool, split: str, seed: int,
             preprocess: Preprocess | None = None) -> SyntheticData:
        """The dataset of task `source` ("circle2square", ...)."""
        refuse_preprocess(preprocess, "synthetic:" + source)
        return cls(source, size, paired, seed=seed, split=split)

    @classmethod
    def held_out(cls, description: dict, size: tuple[int, int], count: int, domain: str = "A"
                 ) -> tuple[torch.Tensor | None, None]:
        """(`count` test images of `domain` (count, 3, H, W), None) of the described task,
        unpaired and with the default noise; (None, None) for an unknown task or H != W."""
        task = description.get("task")
        if task not in TASKS or size[0] != size[1]:
            return None, None
        shapes = cls(task, size[0], paired=False, seed=description.get("seed", 0),
                     split="test").shapes
        return torch.stack([shapes.sample(domain, i)[0] for i in range(count)]), None

    def __len__(self) -> int:
        return len(self.shapes)

    def describe(self) -> dict:
        return self.shapes.describe()

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        """{"A": (batch_size, 3, S, S), "B": ...} float32 in [-1, 1]."""
        n = len(self.shapes)
        index_a = batch_indices(n, step, batch_size, seed, STREAM_A)
        index_b = index_a if self.paired else batch_indices(n, step, batch_size, seed, STREAM_B)
        return {
            "A": torch.stack([self.shapes.sample("A", i)[0] for i in index_a]),
            "B": torch.stack([self.shapes.sample("B", i)[0] for i in index_b]),
        }
