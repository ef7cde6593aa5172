"""Mask CycleGAN on synthetic circles -> squares: change inside vs outside the mask, diversity.

Trains (or resumes) maskcyclegan with the paper's Algorithm 1 masks, then translates held-out
test circles under several masks and writes under --out:
    maskcyclegan.md    the table, the training settings and the machine
    maskcyclegan.json  the same figures
    maskcyclegan.png   masks across the columns, inputs down the rows (like the paper's Fig. 6)

    python benchmarks/maskcyclegan_measure.py --out benchmarks/results [--steps 4000]
    python benchmarks/maskcyclegan_measure.py --checkpoint runs/.../step_001500.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from i2i import sysinfo  # noqa: E402
from i2i.data.masks import parse_mask_spec  # noqa: E402
from i2i.data.shapes import SyntheticShapes  # noqa: E402
from i2i.eval.masked import diversity, masked_change, translate_with  # noqa: E402
from i2i.models import load, read_document  # noqa: E402
from i2i.train.figures import image_rgb, unit_mask_rgb  # noqa: E402
from i2i.train.loop import TrainOptions, logged_seconds, newest_state, train  # noqa: E402

SETTINGS = dict(model="maskcyclegan", data="synthetic:circle2square", ngf=16, n_blocks=3,
                ndf=16, size=32, batch_size=8, seed=0, sample_every=500, checkpoint_every=500,
                log_every=10)
# Masks measured: the paper's three centred squares and three draws of Algorithm 1.
SCHEMES = ("center:0.5", "center:0.8", "center:1.0", "rects", "rects", "rects")
SHOWN = (0, 1, 2, 3)


def train_run(runs: Path, steps: int) -> Path:
    options = TrainOptions(out=str(runs / "maskcyclegan"), steps=steps, **SETTINGS)
    return train(options, resume=newest_state(Path(options.out)) is not None)


def mask_sets(count: int, size: int) -> list[tuple[str, torch.Tensor]]:
    """(name, (count, 1, S, S)) per scheme; the k-th rects draw uses seed k."""
    sets = []
    for k, scheme in enumerate(SCHEMES):
        masks = parse_mask_spec(scheme).sample(count, size, size, generator=k)
        sets.append((f"{scheme} #{k}" if scheme == "rects" else scheme, masks))
    return sets


def write_figure(images, sets, outputs, path: Path) -> None:
    cols = 1 + len(sets)
    fig, axes = plt.subplots(1 + len(SHOWN), cols, figsize=(1.4 * cols, 1.4 * (1 + len(SHOWN))),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].axis("off")
    for col, (name, masks) in enumerate(sets, start=1):
        # One mask drawn per image; the top row shows the first image's, the same in each row
        # for the centred squares.
        axes[0, col].imshow(unit_mask_rgb(masks[SHOWN[0]]), interpolation="nearest")
        axes[0, col].set_title(name, fontsize=7)
    for row, i in enumerate(SHOWN, start=1):
        axes[row, 0].imshow(image_rgb(images[i]), interpolation="nearest")
        for col in range(1, cols):
            axes[row, col].imshow(image_rgb(outputs[col - 1][i]), interpolation="nearest")
    axes[1, 0].set_title("input", fontsize=7)
    fig.suptitle("Mask CycleGAN, circles -> squares: outputs under each mask (top row: the "
                 "first input's mask)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--runs", type=Path, default=Path("runs/maskcyclegan-measure"))
    p.add_argument("--checkpoint", type=Path, default=None, help="measure this one; no training")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--count", type=int, default=128, help="held-out images measured")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or train_run(args.runs, args.steps)
    module, _ = load(checkpoint)
    document = read_document(checkpoint)
    size = document["meta"]["training"]["size"]
    shapes = SyntheticShapes("circle2square", size, split="test", seed=0)
    images = torch.stack([shapes.sample("A", i)[0] for i in range(args.count)])
    sets = mask_sets(args.count, size)
    outputs = [translate_with(module, images, masks) for _, masks in sets]
    rows = [masked_change(name, images, y, masks).to_dict()
            for (name, masks), y in zip(sets, outputs, strict=True)]
    spread = diversity(outputs)
    partial = [y for (name, _), y in zip(sets, outputs, strict=True) if name != "center:1.0"]
    inside = sum(r["change_inside"] for r in rows) / len(rows)
    outside_rows = [r for r in rows if r["change_outside"] == r["change_outside"]]   # not nan
    outside = sum(r["change_outside"] for r in outside_rows) / len(outside_rows)
    write_figure(images, sets, outputs, args.out / "maskcyclegan.png")
    seconds = logged_seconds(checkpoint)
    config, training = document["config"], document["meta"]["training"]
    machine = sysinfo.machine()
    lines = [
        "# Mask CycleGAN on synthetic circles -> squares", "",
        f"Checkpoint `{checkpoint.name}` (step {document['step']}): ngf {config['ngf']}, "
        f"{config['n_blocks']} residual blocks, {size}x{size}, batch {training['batch_size']}, "
        f"masks `{document['meta']['loss_weights']['masks']}` in training"
        + (f"; the invocation that reached this step trained {seconds / 60:.1f} min"
           if seconds else "")
        + f". Machine: {sysinfo.describe(machine)}. Reproduce with `python "
        f"benchmarks/maskcyclegan_measure.py --steps {document['step']}`.", "",
        f"{args.count} held-out test circles, translated under each mask (one mask per image; "
        "the rects draws differ per image).", "",
        "| masks | mask area | mean abs(y - x) inside | mean abs(y - x) outside |",
        "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['masks']} | {r['mask_area']:.3f} | {r['change_inside']:.4f} | "
                     f"{r['change_outside']:.4f} |")
    lines += ["", f"Mean over the masks: inside {inside:.4f}, outside {outside:.4f} "
              "(full masks have no outside).", "",
              f"Diversity (mean pairwise abs difference between translations of the same input "
              f"under the {len(sets)} masks): {spread:.4f}; without the full mask: "
              f"{diversity(partial):.4f}.", "", "![Mask CycleGAN](maskcyclegan.png)", ""]
    (args.out / "maskcyclegan.md").write_text("\n".join(lines))
    record = {"checkpoint": checkpoint.name, "step": document["step"], "config": config,
              "training": training, "train_seconds": seconds, "machine": machine,
              "rows": rows, "mean_inside": inside, "mean_outside": outside,
              "diversity": spread, "diversity_partial": diversity(partial)}
    (args.out / "maskcyclegan.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
