"""One dispatch from a data kind to its dataset: open_data for training, domain_samples for the
export parity gate (from the description a checkpoint recorded).

A spec is "synthetic:<task>", "synthetic:attributes[:name,...]" or a folder path; a folder is
read in the pix2pix layout when the recipe needs pairs, else in the CycleGAN layout. A
description is what a dataset's describe() returned; its "kind" picks the same dataset class.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .batch import BatchData, DataError, Reversed
from .folders import AlignedFolder, UnalignedFolders
from .labelled import ATTRIBUTES_TASK, AttributeData, DomainLabels
from .preprocess import Preprocess
from .shapes import TASKS
from .synthetic import SyntheticData

SYNTHETIC_PREFIX = "synthetic:"


class DataSource(Protocol):
    """A dataset class as the dispatch reaches it."""

    labelled: bool  # its batches carry labels of their own

    def open(self, source: str, size: int, paired: bool, split: str, seed: int,
             preprocess: Preprocess | None = None) -> BatchData:
        """The training dataset; `source` is the spec without "synthetic:"; DataError when it
        cannot take non-default `preprocess`."""
        ...

    def held_out(self, description: dict, size: tuple[int, int], count: int, domain: str = "A"
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(test images of `domain` (M, 3, H, W), regions (M, 1, H, W) or None), M <= count;
        (None, None) when the description cannot give any."""
        ...


# describe()["kind"] -> the dataset class that wrote it.
DATASETS: dict[str, DataSource] = {
    "synthetic": SyntheticData,
    "synthetic_attributes": AttributeData,
    "unaligned": UnalignedFolders,
    "aligned": AlignedFolder,
}


def data_kind(spec: str, paired: bool) -> tuple[str, str]:
    """(kind, source) of a spec: the DATASETS key and what its class opens."""
    if not spec.startswith(SYNTHETIC_PREFIX):
        return ("aligned" if paired else "unaligned"), spec
    task = spec[len(SYNTHETIC_PREFIX) :]
    if task == ATTRIBUTES_TASK or task.startswith(ATTRIBUTES_TASK + ":"):
        return "synthetic_attributes", task
    if task not in TASKS:
        known = ", ".join([SYNTHETIC_PREFIX + t for t in TASKS]
                          + [f"{SYNTHETIC_PREFIX}{ATTRIBUTES_TASK}[:attribute,...]"])
        raise DataError(f"unknown synthetic data {spec!r}; known: {known}")
    return "synthetic", task


def open_data(spec: str, size: int, paired: bool, split: str = "train", seed: int = 0,
              labelled: bool = False, preprocess: Preprocess | None = None,
              direction: str = "AtoB") -> BatchData:
    """A dataset following the batch protocol, from "synthetic:<task>" or a folder path.

    Folders: paired=True reads the pix2pix layout (AlignedFolder), paired=False the CycleGAN
    layout (UnalignedFolders). `seed` seeds synthetic images; folder data ignore it.
    labelled=True (exemplar models) adds "label_A"/"label_B": the scenes' attributes for
    synthetic:attributes, otherwise the domain (A = 0, B = 1). `preprocess` is what folders
    do to training images (synthetic data refuse anything but the default); direction "BtoA"
    swaps the domains (Reversed).
    """
    if direction not in ("AtoB", "BtoA"):
        raise DataError(f"unknown direction {direction!r}; known: AtoB, BtoA")
    kind, source = data_kind(spec, paired)
    dataset = DATASETS[kind]
    if dataset.labelled and not labelled:
        raise DataError(f"{spec} holds labelled scenes for exemplar models (lomit); "
                        f"use {SYNTHETIC_PREFIX}{next(iter(TASKS))} for this model")
    data = dataset.open(source, size, paired, split, seed, preprocess)
    if direction == "BtoA":
        data = Reversed(data)
    return DomainLabels(data) if labelled and not data.labelled else data


def domain_samples(data: dict, size: tuple[int, int], count: int, domain: str = "A"
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(images (M, 3, H, W), regions (M, 1, H, W) in {0, 1} or None) of the data's `domain`
    (A or B, as the data's own files name them), M <= count; (None, None) when the data is
    unknown."""
    if domain not in ("A", "B"):
        raise ValueError(f"domain must be A or B, got {domain!r}")
    dataset = DATASETS.get(data.get("kind"))
    return (None, None) if dataset is None else dataset.held_out(data, size, count, domain)
