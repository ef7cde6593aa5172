"""Measurements of an exemplar translator on the two-attribute scenes, where every answer is known.

For each held-out input we pick an exemplar whose value of the translated attribute differs and
compare the output with the scene generator's metadata:
- locality: mean |output - input| outside the attribute's true region against inside it (the
  disc's one-pixel anti-aliased ring belongs to neither);
- the mask: IoU of the predicted input mask (> 0.5) with the true region;
- transfer: the output's attribute value read back from its pixels (disc colour: nearest base
  colour of the disc's interior; background: stripe or plain from the background's spread)
  equals the exemplar's value;
- truth: mean |output - the scene re-rendered with the exemplar's value|.
The region of "object_color" is the disc; the region of "background" is everything else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..data.scenes import ATTRIBUTES, OBJECT_RGB, AttributeMeta, AttributeShapes

STRIPED_SPREAD = 0.12   # background std above this reads as striped (plain: noise 0.03; stripes
                        # of amplitude 0.35 have std 0.25)


@dataclass
class ExemplarMetrics:
    attribute: str
    pairs: int
    change_inside: float          # mean |y - x| inside the true region (ring excluded)
    change_outside: float         # mean |y - x| outside it (ring excluded)
    outside_over_inside: float
    mask_iou: float               # mean over pairs of IoU(mask > 0.5, true region)
    mask_mean: float              # mean predicted mask value
    transfer: float               # fraction of outputs that read as the exemplar's value
    kept_by_input: float          # the same read-back on the inputs (0: every pair differs)
    error_to_truth: float         # mean |y - truth|

    def to_dict(self) -> dict:
        return asdict(self)


def true_region(meta: AttributeMeta, attribute: str, size: int) -> torch.Tensor:
    """(size, size) bool: where `attribute` lives in this image (disc: coverage > 0.5)."""
    disc = meta.region(size)
    if attribute == "object_color":
        return disc
    if attribute == "background":
        return ~disc
    raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")


def pure_regions(meta: AttributeMeta, attribute: str, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inside, outside), each (size, size) bool, leaving out the disc's anti-aliased ring: its
    pixels mix both regions, so a perfect translation changes them a little in either case."""
    coverage = torch.from_numpy(meta.coverage(size))
    disc, rest = coverage >= 1.0, coverage <= 0.0
    if attribute == "object_color":
        return disc, rest
    if attribute == "background":
        return rest, disc
    raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")


def read_attribute(image: torch.Tensor, meta: AttributeMeta, attribute: str) -> int:
    """The value of `attribute` that `image` (3, S, S) shows, judged in the input's geometry."""
    size = image.shape[-1]
    coverage = torch.from_numpy(meta.coverage(size))
    if attribute == "object_color":
        inside = coverage >= 1.0                                        # away from the soft edge
        mean = image[:, inside].mean(dim=1).numpy()                     # (3,)
        names = ATTRIBUTES["object_color"]
        distances = [np.abs(mean - np.asarray(OBJECT_RGB[n])).sum() for n in names]
        return int(np.argmin(distances))
    if attribute == "background":
        outside = coverage <= 0.0
        luminance = image.mean(dim=0)[outside]
        return int(luminance.std().item() > STRIPED_SPREAD)
    raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")


def exemplar_pairs(scenes: AttributeShapes, attribute: str, count: int
                   ) -> list[tuple[int, int]]:
    """(input index, exemplar index) for the first `count` inputs, each with the next image whose
    value of `attribute` differs from the input's."""
    pairs = []
    n = len(scenes)
    for i in range(min(count, n)):
        value = scenes.labels(i)[attribute]
        j = next((k % n for k in range(i + 1, i + n) if scenes.labels(k % n)[attribute] != value),
                 None)
        if j is None:
            raise ValueError(f"no image in the split has another {attribute!r} than image {i}")
        pairs.append((i, j))
    return pairs


@torch.no_grad()
def measure_exemplars(module: nn.Module, scenes: AttributeShapes, attribute: str,
                      count: int = 128, batch_size: int = 32) -> ExemplarMetrics:
    module.eval()
    size = scenes.size
    pairs = exemplar_pairs(scenes, attribute, count)
    sums = {"inside": 0.0, "outside": 0.0, "n_inside": 0, "n_outside": 0}
    ious, mask_means, transfer, kept, truth_err = [], [], [], [], []
    device = next(module.parameters()).device
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        inputs = [scenes.sample(i) for i, _ in chunk]
        exemplars = [scenes.sample(j) for _, j in chunk]
        x = torch.stack([s[0] for s in inputs])
        e = torch.stack([s[0] for s in exemplars])
        out = module(x.to(device), e.to(device))
        y, mask = out["translation"].float().cpu(), out["mask"].float().cpu()
        for k, (i, _) in enumerate(chunk):
            meta, target = inputs[k][1], exemplars[k][1].labels[attribute]
            region = true_region(meta, attribute, size)                 # (S, S)
            inner, outer = pure_regions(meta, attribute, size)
            change = (y[k] - x[k]).abs().mean(dim=0)                    # (S, S)
            sums["inside"] += change[inner].sum().item()
            sums["outside"] += change[outer].sum().item()
            sums["n_inside"] += int(inner.sum())
            sums["n_outside"] += int(outer.sum())
            predicted = mask[k, 0] > 0.5
            union = (predicted | region).sum().item()
            ious.append((predicted & region).sum().item() / union if union else 1.0)
            mask_means.append(mask[k].mean().item())
            transfer.append(read_attribute(y[k], meta, attribute) == target)
            kept.append(read_attribute(x[k], meta, attribute) == target)
            truth, _ = scenes.translate_truth(i, attribute, target)
            truth_err.append((y[k] - truth).abs().mean().item())
    inside = sums["inside"] / max(1, sums["n_inside"])
    outside = sums["outside"] / max(1, sums["n_outside"])
    return ExemplarMetrics(
        attribute=attribute, pairs=len(pairs), change_inside=inside, change_outside=outside,
        outside_over_inside=outside / inside if inside else float("inf"),
        mask_iou=float(np.mean(ious)), mask_mean=float(np.mean(mask_means)),
        transfer=float(np.mean(transfer)), kept_by_input=float(np.mean(kept)),
        error_to_truth=float(np.mean(truth_err)))
