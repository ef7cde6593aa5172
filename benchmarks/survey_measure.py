"""CycleGAN, CUT and FastCUT (and UNIT, when RECIPES has it) side by side on circles -> squares.

    (a) quality  each recipe trained with the same size, steps, batch, seed and generator width;
                 squareness (IoU of the output's shape with the square bounding the input
                 circle) and mean |output - input| on held-out test circles, measured by
                 i2i.eval.shapes.measure as the lambda_r sweep does; a figure with the inputs
                 and one column per model
    (b) cost     seconds per training step and the memory a step adds at its peak, for cut and
                 fastcut against cyclegan with the same generator and batch, at (a)'s setting
                 and at the papers' (256x256, ngf 64, 9 blocks, batch 1), each recipe in a
                 fresh process, as ratios measured in one run. After a one-image step (it
                 loads the libraries' code and creates the Adam moments), the memory the
                 steps of the real batch add at their peak: on a GPU
                 torch.cuda.max_memory_allocated minus the allocation before them; on a CPU
                 the process's peak resident set (ru_maxrss) minus its resident set before
                 them (activations, temporaries, the allocator's caches). The training state
                 (parameters, gradients, Adam moments: 4 x the parameters) is given apart
    (c) latency  each generator (random seeded weights, ngf 64, 9 blocks, batch 1, 256x256)
                 through onnxruntime on the CPU, exported as i2i-export does and checked against
                 eager before it is timed (cut and fastcut share one generator)

Writes benchmarks/results/survey-<machine>.{json,md,png}.

    python benchmarks/survey_measure.py [--steps 1000] [--out benchmarks/results]
    python benchmarks/survey_measure.py --quick --out /tmp/survey     # a smoke check only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from i2i import sysinfo  # noqa: E402
from i2i.data import open_data  # noqa: E402
from i2i.eval.shapes import measure  # noqa: E402
from i2i.export.to_onnx import export_onnx, onnx_runner  # noqa: E402
from i2i.models import build, get_entry, load, make_config  # noqa: E402
from i2i.train.figures import image_rgb  # noqa: E402
from i2i.train.loop import TrainOptions, newest_state, pick_device, train  # noqa: E402
from i2i.train.registry import RECIPES  # noqa: E402

# label -> TrainOptions fields that pick the recipe
MODELS = {"cyclegan": {"model": "cyclegan"}, "cut": {"model": "cut"},
          "fastcut": {"model": "cut", "switches": {"fastcut": True}}}
if "unit" in RECIPES:
    MODELS["unit"] = {"model": RECIPES["unit"].model}
COST_MODELS = ("cyclegan", "cut", "fastcut")

# 32x32 with 3 PatchGAN layers (UNIT's 4 per scale need 64): small enough for a 2-core CPU.
FULL = dict(size=32, ngf=16, n_blocks=3, ndf=16, disc_layers=3, batch_size=8, count=128,
            step_rounds=10,
            latency_size=256, latency_ngf=64, latency_blocks=9, latency_rounds=5)
QUICK = dict(size=32, ngf=4, n_blocks=1, ndf=8, disc_layers=3, batch_size=2, count=8,
             step_rounds=2,
             latency_size=32, latency_ngf=4, latency_blocks=1, latency_rounds=2)
# (b) again at the papers' own setting, where the seed's speed and memory claims were made:
# 256x256, ngf 64, 9 blocks, a 3-layer PatchGAN with ndf 64, batch 1.
PAPER_COST = dict(size=256, ngf=64, n_blocks=9, ndf=64, disc_layers=3, batch_size=1,
                  step_rounds=5)
QUICK_PAPER_COST = dict(size=64, ngf=8, n_blocks=2, ndf=8, disc_layers=3, batch_size=1,
                        step_rounds=2)
SHOWN = (0, 1, 2, 3)        # held-out images drawn in the figure
PARITY = 1e-4               # onnxruntime vs eager, max abs, before timing


def quality(runs: Path, steps: int, s: dict, device: str) -> dict[str, dict]:
    """(a): train (or resume) each model, then measure it on held-out test circles."""
    rows = {}
    for label, pick in MODELS.items():
        options = TrainOptions(out=str(runs / label), data="synthetic:circle2square",
                               size=s["size"], steps=steps, batch_size=s["batch_size"],
                               ngf=s["ngf"], n_blocks=s["n_blocks"], ndf=s["ndf"], seed=0,
                               disc_layers=s["disc_layers"],
                               device=device, progress=False, sample_every=max(1, steps // 4),
                               checkpoint_every=max(1, steps // 4), **pick)
        checkpoint = train(options, resume=newest_state(Path(options.out)) is not None)
        module, _ = load(checkpoint)
        metrics, images, outputs = measure(module, s["size"], count=s["count"], seed=0)
        rows[label] = {"metrics": metrics.to_dict(), "images": images[list(SHOWN)],
                       "outputs": outputs["translation"][list(SHOWN)]}
        print(f"{label}: {metrics}", flush=True)
    return rows


def step_cost(label: str, s: dict, device: str) -> dict:
    """(b) for one recipe, in the calling process: median seconds per step and the peak
    memory the steps add (see the module's docstring)."""
    torch.manual_seed(0)
    pick = MODELS[label]
    options = TrainOptions(out="", size=s["size"], batch_size=s["batch_size"], ngf=s["ngf"],
                           n_blocks=s["n_blocks"], ndf=s["ndf"], disc_layers=s["disc_layers"],
                           **pick).resolved()
    entry = options.recipe()
    target = pick_device(device)
    recipe, _ = entry.make(options.recipe_options())
    recipe.to(target)
    data = open_data("synthetic:circle2square", s["size"], paired=False, seed=0)
    batches = [{k: v.to(target) for k, v in data.batch(i, s["batch_size"], 0).items()}
               for i in range(s["step_rounds"] + 1)]
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    # A one-image step first: it loads the libraries' code and creates the Adam moments, so
    # what follows measures what a step of the real batch adds on top of the training state.
    recipe.step({k: v[:1] for k, v in batches[0].items()})
    state = sum(p.numel() * p.element_size() for net in recipe.nets.values()
                for p in net.parameters()) * 4        # parameters, gradients, 2 Adam moments
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _resident_bytes()
    recipe.step(batches[0])                     # warm-up at the real batch
    times = []
    for batch in batches[1:]:
        sync()
        start = time.perf_counter()
        recipe.step(batch)
        sync()
        times.append(time.perf_counter() - start)
    if target.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before   # KiB
    return {"label": label, "seconds_per_step": statistics.median(times), "rounds": len(times),
            "peak_bytes": peak, "state_bytes": state, "threads": torch.get_num_threads()}


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def costs(s: dict, device: str) -> dict[str, dict]:
    """(b) for every cost model, each in a fresh process so that peaks do not mix."""
    context = multiprocessing.get_context("spawn")
    rows = {}
    for label in COST_MODELS:
        with context.Pool(1) as pool:
            rows[label] = pool.apply(step_cost, (label, s, device))
        print(rows[label], flush=True)
    base = rows["cyclegan"]
    for row in rows.values():
        row["time_vs_cyclegan"] = row["seconds_per_step"] / base["seconds_per_step"]
        row["memory_vs_cyclegan"] = row["peak_bytes"] / max(1, base["peak_bytes"])
    return rows


def latency(s: dict, folder: Path) -> dict[str, dict]:
    """(c): each distinct generator through onnxruntime at latency_size, batch 1."""
    rows = {}
    size = (s["latency_size"],) * 2
    for name in dict.fromkeys(pick["model"] for pick in MODELS.values()):
        torch.manual_seed(0)
        fields = {"ngf": s["latency_ngf"], "n_blocks": s["latency_blocks"]}
        config = make_config(name, {k: v for k, v in fields.items()
                                    if k in get_entry(name).config.__dataclass_fields__})
        module = build(name, config).eval()
        spec = get_entry(name).spec(config)
        path = folder / f"{name}.onnx"
        export_onnx(module, spec, path, batch=(1, 1, 2), size=size)
        run = onnx_runner(path, threads=torch.get_num_threads())
        g = torch.Generator().manual_seed(1)
        inputs = {t.name: (torch.rand((1, t.shape[1], *size), generator=g) * 2 - 1)
                  if t.spatial else torch.full((1, 1), t.range[1]) for t in spec.inputs}
        with torch.no_grad():
            want = module(**inputs)
        got = run(inputs)                                       # warm-up and parity
        error = max((got[k] - want[k]).abs().max().item() for k in want)
        if error > PARITY:
            raise RuntimeError(f"{name}: onnxruntime differs from eager by {error:.2e}")
        times = []
        for _ in range(s["latency_rounds"]):
            start = time.perf_counter()
            run(inputs)
            times.append(time.perf_counter() - start)
        rows[name] = {"ms": statistics.median(times) * 1e3, "rounds": len(times),
                      "max_abs_vs_eager": error, "config": {**fields, "size": list(size)},
                      "params": sum(p.numel() for p in module.parameters())}
        print(name, rows[name], flush=True)
    return rows


def figure(rows: dict[str, dict], path: Path) -> None:
    labels = list(rows)
    images = next(iter(rows.values()))["images"]
    fig, axes = plt.subplots(len(SHOWN), 1 + len(labels),
                             figsize=(1.6 * (1 + len(labels)), 1.6 * len(SHOWN)), squeeze=False)
    for i in range(len(SHOWN)):
        tiles = [image_rgb(images[i])] + [image_rgb(rows[k]["outputs"][i]) for k in labels]
        for col, tile in enumerate(tiles):
            ax = axes[i, col]
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for col, title in enumerate(["input", *labels]):
        axes[0, col].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(record: dict, stem: str) -> str:
    s, machine = record["settings"], record["machine"]
    lines = [f"# CycleGAN, CUT, FastCUT{', UNIT' if 'unit' in MODELS else ''} on circles -> "
             "squares", ""]
    if record["quick"]:
        lines += ["**A smoke check at tiny settings (`--quick`): these figures measure "
                  "nothing.**", ""]
    lines += [f"Machine: {sysinfo.describe(machine)}; {machine['torch_threads']} torch "
              f"threads; device {record['device']}.", "",
              f"## (a) Quality: {record['steps']} steps, {s['size']}x{s['size']}, batch "
              f"{s['batch_size']}, ngf {s['ngf']}, {s['n_blocks']} residual blocks, ndf "
              f"{s['ndf']}, seed 0; {s['count']} held-out test circles", "",
              "| model | IoU input vs square | IoU output vs square | corner fill | "
              "mean abs(y - x) |", "|---|---:|---:|---:|---:|"]
    for label, row in record["quality"].items():
        m = row["metrics"]
        lines.append(f"| {label} | {m['iou_input']:.3f} | {m['iou_output']:.3f} | "
                     f"{m['corner_fill']:.3f} | {m['change_mean_abs']:.4f} |")
    lines += ["", "IoU: the output's shape pixels against the square bounding the input circle "
              "(a perfect circle 0.785, a perfect square 1.0).", "", f"![models]({stem}.png)",
              "", "## (b) Training cost per step (same generator, batch, size)", "",
              "| model | s / step | vs cyclegan | peak memory a step adds | vs cyclegan | "
              "training state |", "|---|---:|---:|---:|---:|---:|"]
    for label, row in record["cost"].items():
        lines.append(f"| {label} | {row['seconds_per_step']:.3f} | "
                     f"{row['time_vs_cyclegan']:.2f}x | {row['peak_bytes'] / 2**20:.1f} MiB | "
                     f"{row['memory_vs_cyclegan']:.2f}x | {row['state_bytes'] / 2**20:.1f} MiB |")
    memory = ("torch.cuda.max_memory_allocated during the steps minus the allocation before "
              "them" if record["device"] == "cuda" else "the process's peak resident set "
              "(ru_maxrss) minus its resident set before them; it also holds what the first "
              "steps at a new shape allocate once (oneDNN's and the allocator's caches), "
              "which dominates at tiny sizes")
    paper = record.get("paper_cost")
    if paper:
        c = QUICK_PAPER_COST if record["quick"] else PAPER_COST
        lines += ["", f"At the papers' setting ({c['size']}x{c['size']}, ngf {c['ngf']}, "
                  f"{c['n_blocks']} blocks, ndf {c['ndf']}, batch {c['batch_size']}; median of "
                  f"{c['step_rounds']} steps):", "",
                  "| model | s / step | vs cyclegan | peak memory a step adds | vs cyclegan | "
                  "training state |", "|---|---:|---:|---:|---:|---:|"]
        for label, row in paper.items():
            lines.append(f"| {label} | {row['seconds_per_step']:.3f} | "
                         f"{row['time_vs_cyclegan']:.2f}x | {row['peak_bytes'] / 2**20:.1f} MiB"
                         f" | {row['memory_vs_cyclegan']:.2f}x | "
                         f"{row['state_bytes'] / 2**20:.1f} MiB |")
    lines += ["", f"Median of {s['step_rounds']} steps, after a one-image step and a warm-up "
              f"step at the batch, one fresh process per model. Memory a step adds: {memory}. "
              "Training state: parameters, gradients and Adam moments of every network "
              "(4 x the parameters' bytes). cyclegan's step trains two generators and two "
              "discriminators; cut's one generator, its projection heads and one "
              "discriminator, on twice the batch when it has the identity term (CUT, not "
              "FastCUT).", "",
              f"## (c) Inference latency through onnxruntime, batch 1, "
              f"{s['latency_size']}x{s['latency_size']}", "",
              "| generator | params | median ms | max abs vs eager |", "|---|---:|---:|---:|"]
    for name, row in record["latency"].items():
        shown = "cut (and fastcut)" if name == "cut" else name
        lines.append(f"| {shown} | {row['params']:,} | {row['ms']:.1f} | "
                     f"{row['max_abs_vs_eager']:.1e} |")
    lines += ["", f"ngf {s['latency_ngf']}, {s['latency_blocks']} residual blocks, random "
              f"seeded weights, {s['latency_rounds']} timed runs after a warm-up.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--runs", type=Path, default=Path("runs/survey"),
                   help="training runs of (a); an existing run is resumed or reused")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of (a) (default 1000; --quick: 3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (training and (b))")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings, to check that the script runs; measures nothing")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    steps = args.steps or (3 if args.quick else 1000)
    device = pick_device(args.device).type
    machine = sysinfo.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs" if args.quick else args.runs
        rows = quality(runs, steps, s, device)
        record = {"quick": args.quick, "steps": steps, "settings": s, "device": device,
                  "machine": machine, "cost": costs(s, device),
                  "paper_cost": costs(QUICK_PAPER_COST if args.quick else PAPER_COST, device),
                  "latency": latency(s, Path(tmp)),
                  "quality": {k: {"metrics": v["metrics"]} for k, v in rows.items()}}
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine['cpu']} {machine['cpu_count']} cores".lower())
    stem = args.out / f"survey-{slug.strip('-')}"
    figure(rows, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(report(record, stem.name))
    print(f"wrote {stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
