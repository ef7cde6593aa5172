"""Mask-conditioned measurements, checked with translators whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from i2i.eval.masked import diversity, masked_change, translate_with


class Invert(nn.Module):
    """y = -x where the mask is 1, x elsewhere: all change inside, none outside."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, image, mask):
        return {"translation": image * (1 - 2 * mask)}


def test_locality_of_a_translator_that_only_touches_the_mask():
    images = torch.full((4, 3, 8, 8), 0.5)
    masks = torch.zeros(4, 1, 8, 8)
    masks[:, :, :4] = 1                                        # top half
    out = translate_with(Invert(), images, masks, batch_size=3)
    m = masked_change("top", images, out, masks)
    assert m.change_inside == pytest.approx(1.0) and m.change_outside == 0.0
    assert m.mask_area == 0.5 and m.images == 4
    full = masked_change("full", images, translate_with(Invert(), images, torch.ones(4, 1, 8, 8)),
                         torch.ones(4, 1, 8, 8))
    assert math.isnan(full.change_outside)


def test_diversity_by_hand():
    a, b, c = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), 3.0)
    assert diversity([a, b, c]) == pytest.approx((1 + 3 + 2) / 3)
    assert diversity([a, a]) == 0.0
    with pytest.raises(ValueError, match="at least two masks"):
        diversity([a])
