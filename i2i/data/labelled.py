"""Labelled pairs for exemplar models: the attribute scenes' own labels, or the domain as one.

A labelled batch adds "label_A" and "label_B" to "A" and "B": (N, K) floats, one column per
attribute, 0. or 1. (the index of the value name).
"""

from __future__ import annotations

import torch

from .batch import STREAM_A, STREAM_B, BatchData, DataError, batch_indices
from .preprocess import Preprocess, refuse_preprocess
from .scenes import ATTRIBUTES, AttributeShapes

ATTRIBUTES_TASK = "attributes"  # synthetic:attributes[:name,...]: labelled two-attribute scenes


class AttributeData:
    """Labelled pairs for exemplar models from the two-attribute scenes (i2i.data.scenes).

    batch() gives {"A": inputs, "B": exemplars, "label_A", "label_B"}: inputs and exemplars are
    drawn independently (each attribute value is random per image), and the labels hold one
    column per attribute in `labels`, 0. or 1. (the index of the value name).
    """

    paired = False
    labelled = True

    def __init__(self, size: int, labels: tuple[str, ...] = tuple(ATTRIBUTES), seed: int = 0,
                 split: str = "train", length: int = 1000, noise: float = 0.03) -> None:
        unknown = [name for name in labels if name not in ATTRIBUTES]
        if unknown or not labels or len(set(labels)) != len(labels):
            raise DataError(f"synthetic:{ATTRIBUTES_TASK} takes distinct attribute names from "
                            f"{', '.join(ATTRIBUTES)}; got {', '.join(labels) or 'none'}")
        try:
            self.scenes = AttributeShapes(size, split, seed, length, noise)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        self.labels = tuple(labels)

    @classmethod
    def open(cls, source: str, size: int, paired: bool, split: str, seed: int,
             preprocess: Preprocess | None = None) -> AttributeData:
        """"attributes" -> every attribute as a label; "attributes:object_color" -> that one."""
        refuse_preprocess(preprocess, "synthetic:" + source)
        names = source.partition(":")[2]
        labels = tuple(names.split(",")) if names else tuple(ATTRIBUTES)
        return cls(size, labels, seed=seed, split=split)

    @classmethod
    def held_out(cls, description: dict, size: tuple[int, int], count: int, domain: str = "A"
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(`count` test scenes (count, 3, H, W), their true disc regions (count, 1, H, W) in
        {0, 1}) of the described scenes (one kind of scene: `domain` does not choose);
        (None, None) when H != W."""
        if size[0] != size[1]:
            return None, None
        scenes = cls(size[0], seed=description.get("seed", 0), split="test", length=count,
                     noise=description.get("noise", 0.03)).scenes
        samples = [scenes.sample(i) for i in range(count)]
        regions = [meta.region(size[0]).float()[None] for _, meta in samples]   # (1, H, W)
        return torch.stack([image for image, _ in samples]), torch.stack(regions)

    def __len__(self) -> int:
        return len(self.scenes)

    def describe(self) -> dict:
        return {**self.scenes.describe(), "labels": list(self.labels)}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        n = len(self.scenes)
        out = {}
        for key, stream in (("A", STREAM_A), ("B", STREAM_B)):
            images, labels = [], []
            for index in batch_indices(n, step, batch_size, seed, stream):
                image, meta = self.scenes.sample(index)
                images.append(image)
                labels.append([float(meta.labels[name]) for name in self.labels])
            out[key], out[f"label_{key}"] = torch.stack(images), torch.tensor(labels)
        return out


class DomainLabels:
    """Any unpaired A/B data as labelled pairs: A images are label 0, B images label 1."""

    paired = False
    labelled = True
    labels = ("domain",)

    def __init__(self, data: BatchData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def describe(self) -> dict:
        return {**self.data.describe(), "labels": ["domain"]}

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        out = self.data.batch(step, batch_size, seed)
        out["label_A"] = torch.zeros(out["A"].shape[0], 1)
        out["label_B"] = torch.ones(out["B"].shape[0], 1)
        return out
