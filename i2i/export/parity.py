"""The parity gate's measures: an engine against eager fp32 PyTorch from the checkpoint, on a
fixed set of inputs per signature (real inputs where the checkpoint says what it was trained
on, binary masks from mask schemes for a signature that takes a mask, and seeded random ones in
each input's range), with max/mean absolute error and PSNR per output. i2i.export.build runs
each artifact through the engine class that serves it.

Each precision has its own threshold on the [-1, 1] scale (peak-to-peak 2 for PSNR), in one
table (thresholds(); the README restates it):

    precision  measure                 limit     measured on
    fp32       max abs error           <= 1e-4   every parity batch
    fp16       PSNR, worst output      >= 40 dB  every parity batch
    bf16       PSNR, worst output      >= 40 dB  every parity batch
    int8       PSNR, worst output      >= 30 dB  the domain's images (domain_batches)

int8 is gated on the domain's images only: its activation scales are calibrated on that domain,
and uniform noise (the random batches) reaches ranges the calibration never saw, so its error
there says nothing about the pictures the model serves. Its figures on the random batches are
still recorded (`parity_random`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data import domain_samples
from ..data.masks import parse_mask_spec
from ..models.spec import ModelSpec
from .wrap import example_inputs

FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 40.0
BF16_MIN_PSNR = 40.0
INT8_MIN_PSNR = 30.0
# Schemes whose binary masks a signature's mask input is also checked with (the masks Mask
# CycleGAN is trained and demonstrated with); center is skipped where H != W. No all-zero
# mask: Mask CycleGAN's output for one is float32 rounding residue amplified by its instance
# norms (i2i/models/maskcyclegan.py), which no two backends reproduce alike.
MASK_SCHEMES = ("rects", "center:0.5")
MASK_SEED = 2468
Runner = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Threshold:
    measure: str                # "max_abs": at most `limit`; "psnr": at least `limit` dB
    limit: float
    domain_only: bool = False   # gated on the domain's images, not on the random batches too

    def describe(self) -> str:
        return (f"max abs error <= {self.limit:g}" if self.measure == "max_abs"
                else f"PSNR >= {self.limit:g} dB") + (" on the domain's images"
                                                      if self.domain_only else "")


def thresholds() -> dict[str, Threshold]:
    """THE table of parity thresholds, one per precision (read at call time, so a test may
    patch one constant)."""
    return {"fp32": Threshold("max_abs", FP32_MAX_ABS),
            "fp16": Threshold("psnr", FP16_MIN_PSNR),
            "bf16": Threshold("psnr", BF16_MIN_PSNR),
            "int8": Threshold("psnr", INT8_MIN_PSNR, domain_only=True)}


def domain_inputs(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int,
                  domain: str = "A") -> dict[str, torch.Tensor] | None:
    """One batch of real inputs from the training data's `domain` (the one the checkpoint
    translates from; see pool_inputs), or None when the data is unknown."""
    if not spec.of_kind("image"):
        return None
    pool, regions = domain_samples(data, size, batch * len(spec.of_kind("image")), domain)
    return None if pool is None else pool_inputs(spec, pool, regions, batch, size)


def pool_inputs(spec: ModelSpec, pool: torch.Tensor, regions: torch.Tensor | None, batch: int,
                size: tuple[int, int], seed: int = 4321) -> dict[str, torch.Tensor]:
    """One batch of inputs drawn from `pool` (M, 3, H, W) images (and their true `regions`
    (M, 1, H, W), or None).

    Every image input gets its own images (an image paired with itself would hide a swap of two
    inputs); a mask input gets the true object regions of the first image input's images where
    the data knows them; anything else (masks without regions, knobs) seeded uniform values.
    """
    images = list(spec.of_kind("image"))
    # Distinct images per input where the pool holds enough; else each input one image further on.
    step = batch if len(pool) >= batch * len(images) else 1
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        if t in images:
            out[t.name] = pool[(torch.arange(batch) + images.index(t) * step) % len(pool)]
        elif t.kind == "mask" and regions is not None:
            out[t.name] = regions[torch.arange(batch) % len(regions)]
        else:
            low, high = t.range
            shape = (batch, t.channels, *size) if t.spatial else (batch, *t.shape[1:])
            out[t.name] = torch.rand(shape, generator=g) * (high - low) + low
    return out


def parity_inputs(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int,
                  mask_schemes: tuple[str, ...] = (), source: str = "A"
                  ) -> list[dict[str, torch.Tensor]]:
    """Batches of (batch, C, H, W) inputs, each input with its own channels and range: one from
    the training data's `source` domain (if known), one per mask scheme (see scheme_masked), and
    two seeded random ones."""
    domain = domain_batches(spec, data, size, batch, mask_schemes, source)
    randoms = random_batches(spec, size, batch)
    return domain + (scheme_masked(spec, randoms[0], mask_schemes) if not domain else []) + \
        randoms


def domain_batches(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int,
                   mask_schemes: tuple[str, ...] = (), source: str = "A"
                   ) -> list[dict[str, torch.Tensor]]:
    """The parity batches of real images: the domain's batch and its mask-scheme variants;
    [] when the data is unknown."""
    domain = domain_inputs(spec, data, size, batch, source)
    return [] if domain is None else [domain, *scheme_masked(spec, domain, mask_schemes)]


def random_batches(spec: ModelSpec, size: tuple[int, int], batch: int
                   ) -> list[dict[str, torch.Tensor]]:
    """Two seeded batches of uniform values in each input's range."""
    return [example_inputs(spec, batch, size, seed=1234 + i) for i in range(2)]


def scheme_masked(spec: ModelSpec, inputs: dict[str, torch.Tensor], schemes: tuple[str, ...]
                  ) -> list[dict[str, torch.Tensor]]:
    """`inputs` once per scheme, the signature's mask input replaced by the scheme's seeded
    binary masks (N, 1, H, W); none when the signature has no mask input, and none for a scheme
    that cannot draw this size (center: H != W)."""
    masks = spec.of_kind("mask")
    if not masks:
        return []
    name = masks[0].name
    n, _, height, width = inputs[name].shape
    out = []
    for i, text in enumerate(schemes):
        sampler = parse_mask_spec(text)
        try:
            mask = sampler.sample(n, height, width, generator=MASK_SEED + i)
        except ValueError:
            continue
        out.append({**inputs, name: mask.to(inputs[name].device)})
    return out


def compare(reference: Runner, candidate: Runner, inputs: list[dict[str, torch.Tensor]]
            ) -> dict[str, dict[str, float]]:
    """Per output: max_abs, mean_abs and psnr (dB, peak-to-peak 2) over all input batches."""
    diffs: dict[str, list[torch.Tensor]] = {}
    for batch in inputs:
        want, got = reference(batch), candidate(batch)
        for name, value in want.items():
            if name not in got:
                raise ValueError(f"artifact has no output {name!r} (has {sorted(got)})")
            diffs.setdefault(name, []).append((got[name].float() - value.float()).flatten())
    figures = {}
    for name, parts in diffs.items():
        d = torch.cat(parts).double()
        mse = d.square().mean().item()
        figures[name] = {"max_abs": d.abs().max().item(), "mean_abs": d.abs().mean().item(),
                         "psnr": math.inf if mse == 0 else 10 * math.log10(4.0 / mse)}
    return figures


def verdict(figures: dict[str, dict[str, float]], precision: str) -> tuple[bool, str]:
    """(passed, worst output described) under the threshold for `precision`."""
    threshold = thresholds()[precision]
    limit = threshold.limit
    if threshold.measure == "psnr":
        name = min(figures, key=lambda k: figures[k]["psnr"])
        value = figures[name]["psnr"]
        return value >= limit, f"{name}: PSNR {value:.1f} dB (need >= {limit:g})"
    name = max(figures, key=lambda k: figures[k]["max_abs"])
    value = figures[name]["max_abs"]
    return value <= limit, f"{name}: max abs error {value:.2e} (need <= {limit:g})"


def eager_runner(module: torch.nn.Module, spec: ModelSpec) -> Runner:
    """The signature's method of the fp32 module, called directly: the reference."""
    call = getattr(module, spec.method)

    @torch.no_grad()
    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in call(**inputs).items()}
    return run
