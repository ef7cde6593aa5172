"""The parity gate: every artifact against eager fp32 PyTorch from the checkpoint, on a fixed set
of inputs (images of the model's domain where the checkpoint says what it was trained on, and
seeded random images), with max/mean absolute error and PSNR per output.

Thresholds on the [-1, 1] scale: fp32 artifacts max abs error <= 1e-4; fp16 artifacts
PSNR >= 40 dB (peak-to-peak 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models.spec import ModelSpec
from ..synthetic import TASKS, SyntheticShapes

FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 40.0
Runner = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def domain_images(data: dict, size: tuple[int, int], count: int) -> torch.Tensor | None:
    """(count, 3, H, W) images of the training source domain, or None when unknown."""
    if data.get("kind") == "synthetic" and data.get("task") in TASKS and size[0] == size[1]:
        shapes = SyntheticShapes(data["task"], size[0], split="test", seed=data.get("seed", 0))
        return torch.stack([shapes.sample("A", i)[0] for i in range(count)])
    root = Path(str(data.get("root", "")))
    for folder in (root / "testA", root / "trainA"):
        if data.get("root") and folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in
                           (".png", ".jpg", ".jpeg", ".bmp", ".webp"))[:count]
            if files:
                return torch.stack([_load(p, size) for p in files])
    return None


def _load(path: Path, size: tuple[int, int]) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def parity_inputs(spec: ModelSpec, data: dict, size: tuple[int, int], batch: int
                  ) -> list[dict[str, torch.Tensor]]:
    """Batches of (batch, C, H, W) inputs: domain images (if known) and seeded random ones."""
    g = torch.Generator().manual_seed(1234)
    batches = []
    images = domain_images(data, size, batch)
    if images is not None:
        batches.append({t.name: images for t in spec.inputs})
    for _ in range(2):
        batches.append({t.name: torch.rand((batch, spec.channels, *size), generator=g) * 2 - 1
                        for t in spec.inputs})
    return batches


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
