"""The synthetic data's held-out test split written as a dataset root, so that `i2i-eval
synthetic:TASK --model M` measures a model trained on generated data (the demo's) like one
trained on folders.

    root/testA/A0000.png ... domain A's held-out pictures (the ones training never drew)
    root/testB/B0000.png ... domain B's
"""

from __future__ import annotations

from pathlib import Path

from ..data.open import SYNTHETIC_PREFIX, data_kind, domain_samples
from ..pixels import to_image


def is_synthetic(spec: str) -> bool:
    return spec.startswith(SYNTHETIC_PREFIX)


def write_test_split(spec: str, size: tuple[int, int], count: int, root: Path) -> Path:
    """Write `count` held-out pictures of each domain of `spec` (synthetic:TASK) at `size`
    (H, W) under root/testA and root/testB; ValueError naming the spec when it gives none."""
    kind, task = data_kind(spec, paired=False)
    for domain in "AB":
        images, _ = domain_samples({"kind": kind, "task": task}, size, count, domain)
        if images is None:
            raise ValueError(f"{spec} gives no pictures at {size[0]}x{size[1]} (synthetic "
                             "pictures are square): evaluate a model of square size, or pass "
                             "folders")
        folder = root / f"test{domain}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):                 # image (3, H, W) in [-1, 1]
            to_image(image).save(folder / f"{domain}{i:04d}.png")   # unpaired: no shared names
    return root
