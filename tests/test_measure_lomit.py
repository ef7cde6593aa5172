"""The exemplar measurements, checked with translators whose answers are known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2i.data.scenes import AttributeShapes
from i2i.eval.exemplars import (
    exemplar_pairs,
    measure_exemplars,
    read_attribute,
    true_region,
)

SCENES = AttributeShapes(32, "test", seed=5, length=40)


class Oracle(nn.Module):
    """Looks each input up among the scenes and answers with the generator's own truth."""

    def __init__(self, scenes: AttributeShapes, attribute: str):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.scenes, self.attribute = scenes, attribute
        self.index = {scenes.sample(i)[0].numpy().tobytes(): i for i in range(len(scenes))}

    def forward(self, image, exemplar):
        outs, masks = [], []
        for x, e in zip(image, exemplar, strict=True):
            i, j = self.index[x.numpy().tobytes()], self.index[e.numpy().tobytes()]
            value = self.scenes.labels(j)[self.attribute]
            truth, meta = self.scenes.translate_truth(i, self.attribute, value)
            outs.append(truth)
            masks.append(true_region(meta, self.attribute, self.scenes.size).float()[None])
        return {"translation": torch.stack(outs), "mask": torch.stack(masks),
                "exemplar_mask": torch.stack(masks)}


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, image, exemplar):
        zeros = torch.zeros_like(image[:, :1])
        return {"translation": image.clone(), "mask": zeros, "exemplar_mask": zeros}


@pytest.mark.parametrize("attribute", ["object_color", "background"])
def test_reading_an_attribute_back_agrees_with_the_generator(attribute):
    for i in range(len(SCENES)):
        image, meta = SCENES.sample(i)
        assert read_attribute(image, meta, attribute) == meta.labels[attribute], i


@pytest.mark.parametrize("attribute", ["object_color", "background"])
def test_pairs_always_differ_in_the_attribute(attribute):
    pairs = exemplar_pairs(SCENES, attribute, 30)
    assert len(pairs) == 30
    for i, j in pairs:
        assert SCENES.labels(i)[attribute] != SCENES.labels(j)[attribute]


@pytest.mark.parametrize("attribute", ["object_color", "background"])
def test_a_perfect_translator_scores_perfectly(attribute):
    m = measure_exemplars(Oracle(SCENES, attribute), SCENES, attribute, count=24, batch_size=7)
    assert m.pairs == 24
    assert m.change_outside == 0.0 and m.change_inside > 0.2
    assert m.outside_over_inside == 0.0
    assert m.mask_iou == 1.0 and m.transfer == 1.0 and m.kept_by_input == 0.0
    assert m.error_to_truth == 0.0


def test_doing_nothing_transfers_nothing():
    m = measure_exemplars(Identity(), SCENES, "object_color", count=16)
    assert m.change_inside == m.change_outside == 0.0
    assert m.transfer == 0.0 and m.mask_iou == 0.0 and m.mask_mean == 0.0
    # The disc covers >= pi 0.2^2 = 12.6% of the image and the two colours differ by >= 1.2 in
    # two of the three channels (bases 1.4 apart, jitter +-0.1): at least ~0.1 on average.
    assert m.error_to_truth > 0.08


def test_unknown_attribute_is_an_error():
    image, meta = SCENES.sample(0)
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        read_attribute(image, meta, "hair")
    with pytest.raises(ValueError, match="unknown attribute"):
        true_region(meta, "hair", 32)
