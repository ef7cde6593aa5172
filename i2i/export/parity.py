"""The parity gate: every artifact against eager fp32 PyTorch from the checkpoint, on a fixed set
of inputs (real inputs where the checkpoint says what it was trained on, binary masks from mask
schemes for a model that takes a mask, and seeded random ones in each input's range), with
max/mean absolute error and PSNR per output.

Thresholds on the [-1, 1] scale: fp32 artifacts max abs error <= 1e-4; fp16 artifacts
PSNR >= 40 dB (peak-to-peak 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..data import domain_samples
from ..data.masks import parse_mask_spec
from ..models.spec import ModelSpec, TensorSpec
from .wrap import example_inputs

FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 40.0
# Schemes whose binary masks a required input named `mask` is also checked with (the masks
# Mask CycleGAN is trained and demonstrated with); center is skipped where H != W. No all-zero
# mask: Mask CycleGAN's output for one is float32 rounding residue amplified by its instance
# norms (i2i/models/maskcyclegan.py), which no two backends reproduce alike.
MASK_SCHEMES = ("rects", "center:0.5")
MASK_SEED = 2468
Runner = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def domain_inputs(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int
                  ) -> dict[str, torch.Tensor] | None:
    """One batch of real inputs from the training data, or None when the data is unknown.

    Every image input gets its own images (an image paired with itself would hide a swap of two
    inputs); a mask input (one channel in [0, 1]) gets the true object regions of the first image
    input's images where the data knows them, else seeded uniform values.
    """
    images = [t for t in spec.inputs if _is_image(t, spec)]
    if not images:
        return None
    pool, regions = domain_samples(data, size, batch * len(images))
    if pool is None:
        return None
    # Distinct images per input where the pool holds enough; else each input one image further on.
    step = batch if len(pool) >= batch * len(images) else 1
    g = torch.Generator().manual_seed(4321)
    out = {}
    for t in spec.inputs:
        if t in images:
            out[t.name] = pool[(torch.arange(batch) + images.index(t) * step) % len(pool)]
        elif _is_mask(t) and regions is not None:
            out[t.name] = regions[torch.arange(batch) % len(regions)]
        else:
            low, high = t.range
            out[t.name] = torch.rand((batch, t.shape[1], *size), generator=g) * (high - low) + low
    return out


def _is_image(t: TensorSpec, spec: ModelSpec) -> bool:
    return t.shape[1] == spec.channels and tuple(t.range) == (-1.0, 1.0)


def _is_mask(t: TensorSpec) -> bool:
    return t.shape[1] == 1 and tuple(t.range) == (0.0, 1.0)


def parity_inputs(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int,
                  mask_schemes: tuple[str, ...] = ()) -> list[dict[str, torch.Tensor]]:
    """Batches of (batch, C, H, W) inputs, each input with its own channels and range: one from
    the training data (if known), one per mask scheme (see scheme_masked), and two seeded random
    ones."""
    domain = domain_inputs(spec, data, size, batch)
    randoms = [example_inputs(spec, batch, size, seed=1234 + i) for i in range(2)]
    schemed = scheme_masked(spec, domain if domain is not None else randoms[0], mask_schemes)
    return ([domain] if domain is not None else []) + schemed + randoms


def scheme_masked(spec: ModelSpec, inputs: dict[str, torch.Tensor], schemes: tuple[str, ...]
                  ) -> list[dict[str, torch.Tensor]]:
    """`inputs` once per scheme, its input named `mask` replaced by the scheme's seeded binary
    masks (N, 1, H, W); none when the spec has no such mask input, and none for a scheme that
    cannot draw this size (center: H != W)."""
    if not any(t.name == "mask" and _is_mask(t) for t in spec.inputs):
        return []
    n, _, height, width = inputs["mask"].shape
    out = []
    for i, text in enumerate(schemes):
        sampler = parse_mask_spec(text)
        try:
            mask = sampler.sample(n, height, width, generator=MASK_SEED + i)
        except ValueError:
            continue
        out.append({**inputs, "mask": mask.to(inputs["mask"].device)})
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
    if precision == "fp16":
        name = min(figures, key=lambda k: figures[k]["psnr"])
        value = figures[name]["psnr"]
        return value >= FP16_MIN_PSNR, f"{name}: PSNR {value:.1f} dB (need >= {FP16_MIN_PSNR})"
    name = max(figures, key=lambda k: figures[k]["max_abs"])
    value = figures[name]["max_abs"]
    return value <= FP32_MAX_ABS, f"{name}: max abs error {value:.2e} (need <= {FP32_MAX_ABS})"


def eager_runner(module: torch.nn.Module) -> Runner:
    @torch.no_grad()
    def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in module(**inputs).items()}
    return run
