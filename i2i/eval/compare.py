"""One comparison: generated pictures against target pictures -> a report (dict), its table and
its JSON file.

The distribution metrics (FID, KID, precision, recall: distribution.py) compare the two sets
as wholes through a feature network (features.py); the paired metrics (paired.py) compare each
generated picture with the target of the same name, where there is one. Pictures stream: only
features and per-pair numbers are kept, never the pictures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from ..atomic import write_text
from . import distribution
from .features import FeatureBatches, describe
from .paired import TOLERANCE, PairedTotals
from .pictures import PictureFiles, Translated


@dataclass(frozen=True)
class CompareOptions:
    kid_subsets: int = distribution.KID_SUBSETS
    kid_subset_size: int = distribution.KID_SUBSET_SIZE
    k: int = distribution.K
    tolerance: int = TOLERANCE
    batch_size: int = 32              # pictures per feature network run
    seed: int = 0                     # KID's subsets
    pairs: bool = True                # False: no paired metrics, even where names match
    progress: bool = True


def distribution_metrics(generated: np.ndarray, target: np.ndarray,
                         options: CompareOptions) -> dict:
    """{"fid", "kid", "kid_std", "kid_subset_size", "precision", "recall", "k"} of two
    (N, D) feature sets."""
    kid, kid_std, subset = distribution.kid(generated, target, options.kid_subsets,
                                            options.kid_subset_size, options.seed)
    precision, recall = distribution.precision_recall(generated, target, options.k)
    return {"fid": distribution.fid(generated, target), "kid": kid, "kid_std": kid_std,
            "kid_subset_size": subset, "kid_subsets": options.kid_subsets,
            "precision": precision, "recall": recall, "k": options.k}


def compare(generated: PictureFiles | Translated, target: PictureFiles, net: nn.Module,
            options: CompareOptions | None = None) -> dict:
    """Features of every generated and target picture, the distribution metrics between them,
    and the paired metrics over the generated pictures with a target of their name."""
    options = options or CompareOptions()
    device = next(net.parameters()).device
    made, wanted = FeatureBatches(net, options.batch_size, device), \
        FeatureBatches(net, options.batch_size, device)
    pairs = PairedTotals(options.tolerance)
    partners = target.names() if options.pairs else {}
    with tqdm(total=len(generated) + len(target), desc="pictures", unit="img",
              disable=not options.progress) as bar:
        for name, picture in generated:
            made.add(picture)
            if name in partners:
                truth = target.load(partners[name])
                if truth is not None:
                    pairs.add(picture, truth, name)
            bar.update()
        for _, picture in target:
            wanted.add(picture)
            bar.update()
    ours, theirs = made.result(), wanted.result()
    report = {"features": describe(net),
              "pictures": {"generated": len(ours), "target": len(theirs), "paired": pairs.count},
              **distribution_metrics(ours, theirs, options)}
    report["paired"] = pairs.means()
    return report


# (label, what it measures) of each metric the table shows.
MEANING = {
    "fid": ("FID", "distance between the feature distributions (lower is better)"),
    "kid": ("KID", "unbiased polynomial-kernel MMD^2 of the features (lower is better)"),
    "precision": ("precision", "share of generated pictures inside the target manifold "
                               "(fidelity)"),
    "recall": ("recall", "share of target pictures inside the generated manifold (variety)"),
    "pixel_accuracy": ("pixel accuracy", "share of pixels within {tolerance} levels of the "
                                         "target in every channel"),
    "psnr": ("PSNR", "peak signal-to-noise ratio to the target, dB (higher is better)"),
    "ssim": ("SSIM", "structural similarity to the target (1 = identical)"),
}


def _number(value: float, digits: int = 4) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def table(report: dict) -> str:
    """The report as lines for a terminal: features, picture counts, one metric a row."""
    about = report["features"]
    counts = report["pictures"]
    lines = [f"features: {about['network']} ({about['dim']}-d)"]
    if not about["comparable"]:
        lines.append(f"  NOTE: {about['note']}")
    lines.append(f"pictures: {counts['generated']} generated, {counts['target']} target, "
                 f"{counts['paired']} paired by name")
    rows = [("fid", _number(report["fid"])),
            ("kid", f"{_number(report['kid'], 5)} +- {_number(report['kid_std'], 5)}"),
            ("precision", _number(report["precision"])), ("recall", _number(report["recall"]))]
    paired = report.get("paired")
    if paired:
        rows += [("pixel_accuracy", _number(paired["pixel_accuracy"])),
                 ("psnr", _number(paired["psnr"], 2)), ("ssim", _number(paired["ssim"]))]
    width = max(len(v) for _, v in rows)
    for key, value in rows:
        label, meaning = MEANING[key]
        label += f" (k={report['k']})" if key in ("precision", "recall") else ""
        meaning = meaning.format(tolerance=paired["tolerance"] if paired else TOLERANCE)
        lines.append(f"  {label:<16} {value:>{width}}  {meaning}")
    if not paired:
        lines.append("  (no paired metrics: no generated picture has a target of its name, or "
                     "--unpaired)")
    return "\n".join(lines)


def _finite(value):
    """JSON has no infinity: PSNR of identical pictures is written as the string "inf"."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else str(value)
    return value


def write_report(report: dict, path: Path) -> Path:
    """The report as a JSON file, written atomically."""
    path = Path(path)
    write_text(path, json.dumps(_finite(report), indent=2) + "\n")
    return path
