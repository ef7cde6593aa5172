"""`make demo`: train a small additive-mask translator on synthetic circles -> squares on the
CPU, translate held-out images, export it (ONNX fp32 + fp16, AOTInductor, a Triton repository,
each parity-checked) and write a report to out/demo/.

    python -m i2i.demo [--runs runs] [--exports exports] [--out out/demo] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from . import sysinfo
from .eval.shapes import measure
from .export import ExportOptions, build, read_manifest
from .manifest import sha256
from .models import load
from .train.figures import translation_grid
from .train.loop import TrainOptions, newest_state, train

# Small enough to learn circle -> square in a few minutes on 2 CPU cores.
DEMO = dict(model="additive", data="synthetic:circle2square", size=32, batch_size=16,
            ngf=16, n_blocks=3, ndf=32, disc_layers=3, lambda_r=0.1, seed=0,
            sample_every=250, checkpoint_every=250)
DEMO_STEPS = 1000


def _default_artifacts(export_dir: Path) -> dict:
    return read_manifest(export_dir)["signatures"]["default"]["artifacts"]


def run_demo(runs: Path, out: Path, steps: int = DEMO_STEPS, exports: Path | None = None) -> dict:
    run = runs / "demo-additive"
    options = TrainOptions(out=str(run), steps=steps, **DEMO)
    started = time.perf_counter()
    checkpoint = train(options, resume=newest_state(run) is not None)
    train_seconds = time.perf_counter() - started

    module, _ = load(checkpoint)
    metrics, images, outputs = measure(module, DEMO["size"], count=64, seed=DEMO["seed"])
    out.mkdir(parents=True, exist_ok=True)
    grid = translation_grid(images[:10], {k: v[:10] for k, v in outputs.items()}, scale=4)
    grid.save(out / "translations.png")
    shutil.copy(run / "loss_curve.png", out / "loss_curve.png")
    started = time.perf_counter()
    export_dir = (exports or Path("exports")) / "additive"
    if not _exported(export_dir, checkpoint):
        build(checkpoint, ExportOptions(out=export_dir, formats=("onnx", "aoti", "triton"),
                                        fp16=True, batch=(1, 8, 32)))
    export_seconds = time.perf_counter() - started
    from .demo_serve import serve_demo
    served = serve_demo(export_dir, images, out)
    from .demo_photo import real_size
    photo = real_size(export_dir, out)
    summary = {"checkpoint": str(checkpoint), "steps": steps, "train_seconds": train_seconds,
               "metrics": metrics.to_dict(), "machine": sysinfo.machine(), "options": DEMO,
               "export": {"dir": str(export_dir), "seconds": export_seconds,
                          "artifacts": _default_artifacts(export_dir)},
               "serving": served, "real_size": photo}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(summary))
    return summary


def _exported(export_dir: Path, checkpoint: Path) -> bool:
    """True when export_dir already holds a passing export of this very checkpoint."""
    try:
        manifest = read_manifest(export_dir)
    except (FileNotFoundError, ValueError):
        return False
    return (manifest["checkpoint"]["sha256"] == sha256(checkpoint)
            and {"onnx", "onnx_fp16", "aoti", "triton"}
            <= set(manifest["signatures"]["default"]["artifacts"])
            and not manifest.get("parity_failures"))


def report(s: dict) -> str:
    from .demo_photo import section

    m = s["metrics"]
    verdict = ("the outputs are squarer than the inputs" if m["iou_output"] > m["iou_input"] +
               0.02 else "the outputs are NOT measurably squarer than the inputs")
    return f"""# i2i demo: additive-mask translation, circles -> squares

Model: `additive` (ResNet mask generator, ngf {s['options']['ngf']}, {s['options']['n_blocks']}
blocks), trained {s['steps']} steps at {s['options']['size']}x{s['options']['size']}, batch
{s['options']['batch_size']}, lambda_r {s['options']['lambda_r']}, in {s['train_seconds']:.0f} s
(0 s when the run was already complete) on {sysinfo.describe(s['machine'])}.
Checkpoint: `{s['checkpoint']}`

![translations](translations.png)

Rows: held-out input, mask (channel mean; red adds, blue removes), output = clamp(input + mask).

| measure on {m['images']} held-out test images | value |
|---|---|
| IoU, input shape vs bounding square (a perfect circle: 0.785) | {m['iou_input']:.3f} |
| IoU, output shape vs bounding square (a perfect square: 1.0) | {m['iou_output']:.3f} |
| corner fill: share of square-minus-circle pixels turned into shape | {m['corner_fill']:.3f} |
| mean mask magnitude, mean abs(m) | {m['mask_mean_abs']:.4f} |
| mask area: pixels with max abs(m) over channels > 0.1 | {m['mask_area']:.3f} |
| mean change, mean abs(y - x) | {m['change_mean_abs']:.4f} |

Verdict: {verdict}.

![loss curve](loss_curve.png)

## Export ({s['export']['seconds']:.0f} s to `{s['export']['dir']}`)

Each artifact against eager fp32 PyTorch on the same inputs (held-out shapes and random images);
thresholds: fp32 max abs error <= 1e-4, fp16 PSNR >= 40 dB.

{parity_table(s['export']['artifacts'])}

## Serving

The exported model served in-process by i2i-serve's app (onnxruntime engine, max batch 16,
5 ms batch window): {s['serving']['requests']} held-out images sent as concurrent KServe v2
requests from {s['serving']['clients']} tritonclient workers, and 8 as PNG uploads to
/v1/translate.

| measure | value |
|---|---|
| largest difference from a direct engine call | {s['serving']['max_abs_vs_engine']:.2e} |
| latency p50 / p99 | {s['serving']['p50_ms']:.1f} ms / {s['serving']['p99_ms']:.1f} ms |
| batches run / mean batch size | {s['serving']['batches']:.0f} / {s['serving']['mean_batch']:.2f} |

![served](served.png)

Top: inputs; bottom: the PNGs /v1/translate returned.

""" + section(s["real_size"])


def parity_table(artifacts: dict) -> str:
    lines = ["| artifact | precision | output | max abs error | mean abs error | PSNR (dB) | "
             "passed |", "|---|---|---|---:|---:|---:|---|"]
    for key, facts in artifacts.items():
        for output, f in facts.get("parity", {}).items():
            lines.append(f"| {facts.get('file', key)} | {facts['precision']} | {output} | "
                         f"{f['max_abs']:.2e} | {f['mean_abs']:.2e} | {f['psnr']:.1f} | "
                         f"{'yes' if facts['passed'] else 'NO'} |")
        if "models" in facts:
            lines.append(f"| {facts['repository']}/ (Triton repository) | | "
                         f"{', '.join(facts['models'])} | | | | config written |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--steps", type=int, default=DEMO_STEPS)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    s = run_demo(args.runs, args.out, args.steps, args.exports)
    m = s["metrics"]
    print(f"trained {s['steps']} steps in {s['train_seconds']:.0f} s; squareness IoU "
          f"{m['iou_input']:.3f} (inputs) -> {m['iou_output']:.3f} (outputs), corner fill "
          f"{m['corner_fill']:.3f}")
    print(f"exported to {s['export']['dir']} in {s['export']['seconds']:.0f} s (0 when already "
          "up to date)")
    print(f"wrote {args.out / 'report.md'}, {args.out / 'translations.png'}, "
          f"{args.out / 'loss_curve.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
