"""The additive-mask seed's headline claim, measured: mask area against lambda_r.

Trains the additive model on synthetic circles -> squares with the same seed, steps and size for
each lambda_r, measures held-out translations and writes, under --out:
    lambda_r.md    the table (lambda_r, mean |m|, mask area, mean |y - x|, squareness)
    lambda_r.json  the same figures with the options and the machine
    lambda_r.png   one column per lambda_r: input / mask / output, like the paper's Fig. 4

    python benchmarks/lambda_r_sweep.py --out benchmarks/results [--steps 1200] [--size 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from i2i import sysinfo  # noqa: E402
from i2i.demo import DEMO  # noqa: E402
from i2i.eval.shapes import CHANGED, measure  # noqa: E402
from i2i.models import load  # noqa: E402
from i2i.train.figures import image_rgb, mask_rgb  # noqa: E402
from i2i.train.loop import TrainOptions, newest_state, train  # noqa: E402

LAMBDAS = (0.01, 1.0, 10.0, 100.0)
SHOWN = (0, 1, 2)          # held-out images drawn in the figure


def sweep(out: Path, runs: Path, steps: int, size: int, lambdas=LAMBDAS) -> list[dict]:
    rows = []
    for lam in lambdas:
        options = TrainOptions(out=str(runs / f"lambda_r-{lam:g}"), steps=steps,
                               **{**DEMO, "size": size, "lambda_r": lam})
        checkpoint = train(options, resume=newest_state(Path(options.out)) is not None)
        module, _ = load(checkpoint)
        metrics, images, outputs = measure(module, size, count=128, seed=DEMO["seed"])
        rows.append({"lambda_r": lam,
                     "metrics": metrics.to_dict(), "images": images[list(SHOWN)],
                     "outputs": {k: v[list(SHOWN)] for k, v in outputs.items()}})
        print(f"lambda_r {lam:g}: {metrics}")
    return rows


def write_table(rows: list[dict], out: Path, steps: int, size: int) -> None:
    machine = sysinfo.machine()
    lines = ["# Mask area against lambda_r (additive model, circles -> squares)", "",
             f"Each run: {steps} steps, {size}x{size}, batch {DEMO['batch_size']}, ngf "
             f"{DEMO['ngf']}, {DEMO['n_blocks']} residual blocks, seed {DEMO['seed']}; measured "
             f"on {rows[0]['metrics']['images']} held-out test images. Machine: "
             f"{sysinfo.describe(machine)}.", "",
             f"| lambda_r | mean abs mask | mask area (max_c abs m > {CHANGED}) | mean abs(y - x) "
             "| IoU input vs square | IoU output vs square | corner fill |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['lambda_r']:g} | {m['mask_mean_abs']:.4f} | {m['mask_area']:.3f} | "
                     f"{m['change_mean_abs']:.4f} | {m['iou_input']:.3f} | "
                     f"{m['iou_output']:.3f} | {m['corner_fill']:.3f} |")
    lines += ["", "IoU: the output's shape pixels (nearer the shape's colour than the "
              "background's) against the square that bounds the input circle; a perfect circle "
              "scores 0.785, a perfect square 1.0. Corner fill: the share of the "
              "square-minus-circle pixels that became shape.", "", "![lambda_r](lambda_r.png)",
              ""]
    (out / "lambda_r.md").write_text("\n".join(lines))
    record = {"steps": steps, "size": size, "options": DEMO, "machine": machine,
              "rows": [{k: r[k] for k in ("lambda_r", "metrics")}
                       for r in rows]}
    (out / "lambda_r.json").write_text(json.dumps(record, indent=2) + "\n")


def write_figure(rows: list[dict], out: Path) -> None:
    n_img = len(SHOWN)
    fig, axes = plt.subplots(3 * n_img, len(rows), figsize=(1.6 * len(rows), 1.6 * 3 * n_img),
                             squeeze=False)
    for col, r in enumerate(rows):
        for i in range(n_img):
            tiles = [image_rgb(r["images"][i]), mask_rgb(r["outputs"]["mask"][i]),
                     image_rgb(r["outputs"]["translation"][i])]
            for k, (tile, label) in enumerate(zip(tiles, ("input", "mask", "output"),
                                                  strict=True)):
                ax = axes[3 * i + k, col]
                ax.imshow(tile, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(label, fontsize=8)
        axes[0, col].set_title(f"lambda_r = {r['lambda_r']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "lambda_r.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--runs", type=Path, default=Path("runs/sweep"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = sweep(args.out, args.runs, args.steps, args.size)
    write_table(rows, args.out, args.steps, args.size)
    write_figure(rows, args.out)
    print((args.out / "lambda_r.md").read_text())


if __name__ == "__main__":
    main()
