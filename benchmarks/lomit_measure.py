"""LOMIT on the two-attribute scenes: locality, mask IoU and exemplar transfer, measured.

Trains (or resumes) LOMIT on synthetic:attributes:<attribute>, measures held-out test pairs whose
exemplar has the other value of the attribute (i2i.eval.exemplars), and writes under --out:
    lomit.md    the table, the training settings and the machine
    lomit.json  the same figures
    lomit.png   the paper's columns (input, input mask, exemplar, exemplar mask, output) for
                several inputs, each with several exemplars

    python benchmarks/lomit_measure.py --out benchmarks/results [--steps 8000] [--size 32]
    python benchmarks/lomit_measure.py --checkpoint runs/lomit/checkpoints/step_008000.safetensors
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
from i2i.data.scenes import ATTRIBUTES, AttributeShapes  # noqa: E402
from i2i.eval.exemplars import measure_exemplars  # noqa: E402
from i2i.models import load, read_document  # noqa: E402
from i2i.train.figures import image_rgb, unit_mask_rgb  # noqa: E402
from i2i.train.loop import TrainOptions, logged_seconds, newest_state, train  # noqa: E402

SETTINGS = dict(model="lomit", ngf=16, ndf=16, size=32, seed=0, sample_every=1000,
                checkpoint_every=1000, log_every=20)
SHOWN_INPUTS = (0, 1, 2)
EXEMPLARS_PER_INPUT = 3
COLUMNS = ("input", "input mask", "exemplar", "exemplar mask", "output")


def train_run(runs: Path, attribute: str, steps: int, size: int) -> Path:
    options = TrainOptions(out=str(runs / f"lomit-{attribute}"), steps=steps,
                           data=f"synthetic:attributes:{attribute}", **{**SETTINGS, "size": size})
    return train(options, resume=newest_state(Path(options.out)) is not None)


def figure_pairs(scenes: AttributeShapes, attribute: str) -> list[tuple[int, int]]:
    """Each shown input with exemplars of the other value, then one of its own value."""
    pairs = []
    for i in SHOWN_INPUTS:
        value = scenes.labels(i)[attribute]
        others = [j for j in range(len(scenes)) if j != i
                  and scenes.labels(j)[attribute] != value][:EXEMPLARS_PER_INPUT - 1]
        same = next(j for j in range(len(scenes)) if j != i
                    and scenes.labels(j)[attribute] == value)
        pairs += [(i, j) for j in [*others, same]]
    return pairs


@torch.no_grad()
def write_figure(module, scenes: AttributeShapes, attribute: str, path: Path) -> None:
    pairs = figure_pairs(scenes, attribute)
    x = torch.stack([scenes.sample(i)[0] for i, _ in pairs])
    e = torch.stack([scenes.sample(j)[0] for _, j in pairs])
    out = module(x, e)
    tiles = [x, out["mask"], e, out["exemplar_mask"], out["translation"]]
    fig, axes = plt.subplots(len(pairs), len(COLUMNS), figsize=(1.5 * len(COLUMNS),
                                                                1.5 * len(pairs)), squeeze=False)
    for row, (i, j) in enumerate(pairs):
        for col, name in enumerate(COLUMNS):
            picture = tiles[col][row]
            ax = axes[row, col]
            ax.imshow(unit_mask_rgb(picture) if "mask" in name else image_rgb(picture),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=8)
        names = ATTRIBUTES[attribute]
        axes[row, 0].set_ylabel(f"{names[scenes.labels(i)[attribute]]} <- "
                                f"{names[scenes.labels(j)[attribute]]}", fontsize=7)
    fig.suptitle(f"LOMIT, {attribute}: test images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, checkpoint: Path, metrics, seconds: float | None,
                 note: str = "") -> None:
    document = read_document(checkpoint)
    training = document["meta"]["training"]
    config = document["config"]
    machine = sysinfo.machine()
    m = metrics.to_dict()
    lines = [
        f"# LOMIT on synthetic two-attribute scenes: {m['attribute']}", "",
        f"Checkpoint `{checkpoint.name}` (step {document['step']}): ngf {config['ngf']}, "
        f"{config['n_res']} residual blocks, trained at {training['size']}x{training['size']}, "
        f"batch {training['batch_size']}, lr {training['lr']}, critic width {training['ndf']}"
        + (f"; the invocation that reached this step trained {seconds / 60:.1f} min"
           if seconds else "")
        + f". Machine: {sysinfo.describe(machine)}. Reproduce with `python "
        f"benchmarks/lomit_measure.py --attribute {m['attribute']} --steps {document['step']}`.",
        "",
        f"Measured on {m['pairs']} held-out test inputs, each with an exemplar whose "
        f"{m['attribute']} differs." + (f" {note}" if note else ""), "",
        "| measure | value | target / reference |", "|---|---:|---|",
        f"| mean abs(y - x) inside the true region | {m['change_inside']:.4f} | large |",
        f"| mean abs(y - x) outside it | {m['change_outside']:.4f} | at most a third of inside |",
        f"| outside / inside | {m['outside_over_inside']:.3f} | <= 0.333 |",
        f"| IoU(mask > 0.5, true region) | {m['mask_iou']:.3f} | 1 |",
        f"| mean mask value | {m['mask_mean']:.3f} | the region's area share |",
        f"| outputs showing the exemplar's {m['attribute']} | {m['transfer']:.3f} | 1 (inputs: "
        f"{m['kept_by_input']:.3f}) |",
        f"| mean abs(y - truth) | {m['error_to_truth']:.4f} | 0 |", "",
        "Inside/outside leave out the disc's anti-aliased ring. The truth is the input's scene "
        "re-rendered with the exemplar's value (same geometry and noise). Transfer reads the "
        "output's disc colour (nearest base colour of the disc's interior) or background "
        "(striped when its spread is above 0.12).", "", "![LOMIT](lomit.png)", ""]
    (out / "lomit.md").write_text("\n".join(lines))
    record = {"checkpoint": checkpoint.name, "step": document["step"], "config": config,
              "training": training, "train_seconds": seconds, "machine": machine, "metrics": m,
              "note": note}
    (out / "lomit.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--runs", type=Path, default=Path("runs/lomit-measure"))
    p.add_argument("--checkpoint", type=Path, default=None, help="measure this one; no training")
    p.add_argument("--attribute", default="object_color", choices=list(ATTRIBUTES))
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--count", type=int, default=128, help="held-out pairs measured")
    p.add_argument("--note", default="", help="a sentence added to the report (how the run "
                                              "was made, if not by this script alone)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or train_run(args.runs, args.attribute, args.steps, args.size)
    seconds = logged_seconds(checkpoint)
    module, _ = load(checkpoint)
    size = read_document(checkpoint)["meta"]["training"]["size"]
    scenes = AttributeShapes(size, "test", seed=0, length=max(args.count, 64))
    metrics = measure_exemplars(module, scenes, args.attribute, args.count)
    write_figure(module, scenes, args.attribute, args.out / "lomit.png")
    write_report(args.out, checkpoint, metrics, seconds, args.note)
    print((args.out / "lomit.md").read_text())


if __name__ == "__main__":
    main()
