"""Squareness and mask measurements against translators whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from i2i.data.shapes import SyntheticShapes
from i2i.eval.shapes import held_out, measure, shape_metrics


class Oracle(nn.Module):
    """Returns the paired square for each circle: the perfect circle -> square translator."""

    def __init__(self, shapes: SyntheticShapes):
        super().__init__()
        self.shapes = shapes
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, image):
        squares = torch.stack([self.shapes.sample("B", i)[0] for i in range(len(image))])
        return {"translation": squares, "mask": squares - image}


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, image):
        return {"translation": image.clone(), "mask": torch.zeros_like(image)}


def test_identity_keeps_the_circles_squareness_and_changes_nothing():
    metrics, _, _ = measure(Identity(), size=48, count=16)
    assert metrics.iou_output == metrics.iou_input
    assert metrics.iou_input == pytest.approx(math.pi / 4, abs=0.05)
    assert metrics.corner_fill < 0.05
    assert metrics.mask_mean_abs == 0.0 and metrics.mask_area == 0.0
    assert metrics.change_mean_abs == 0.0


def test_the_paired_square_scores_as_a_square():
    shapes = SyntheticShapes(size=48, split="test", paired=True, noise=0.0)
    images, metas = held_out(shapes, 16)
    outputs = Oracle(shapes)(images)
    metrics = shape_metrics(images, outputs, metas)
    assert metrics.iou_output > 0.95
    assert metrics.corner_fill > 0.95
    # The change is confined to the four corners: about (4 - pi) r^2 of the image.
    assert 0.0 < metrics.mask_area < 0.2
