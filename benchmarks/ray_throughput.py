"""Throughput of a folder translation: the local command against the Ray job, on one folder.

    python benchmarks/ray_throughput.py --out benchmarks/results            (500 pictures)
    python benchmarks/ray_throughput.py --quick --out /tmp/ray-quick        (a smoke check)

Renders N pictures (i2i.data.photo, 256x256 JPEGs) and a random-weight additive translator of the
standard size (ngf 64, 9 blocks: throughput does not depend on the weights), then times:

- local: i2i-translate as one process, torch on every core (what one machine does alone);
- ray: i2i-translate --ray --workers W on a local Ray of W CPUs, one torch thread per actor,
  Ray's start (ray.init) timed apart from the job;
- the stages of one picture in one thread: read + decode, engine, encode + atomic write, which
  bound what a cluster can reach: W workers reach at most W / (seconds a picture in a worker),
  until the disk or network that serves the pictures is the limit (bytes a picture x pictures/s).

Writes ray-throughput-<machine>.md and .json under --out: the measured table, and a projection
for 8 to 256 workers from the per-worker rate and the 2-worker efficiency measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from i2i import sysinfo
from i2i.data.photo import render
from i2i.models import build, make_config, save_checkpoint
from i2i.runtime import images
from i2i.runtime.folder import FolderOptions, translate_folder
from i2i.runtime.ray_job import EngineArgs, translate_with_ray

PROJECTED = (8, 32, 128, 256)


def make_inputs(folder: Path, count: int, side: int) -> int:
    """`count` JPEG pictures of side x side; returns the bytes of one."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        render(side, side, seed=i).save(folder / f"p{i:04d}.jpg", quality=90)
    return (folder / "p0000.jpg").stat().st_size


def make_model(folder: Path, ngf: int, n_blocks: int) -> Path:
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": ngf, "n_blocks": n_blocks})
    return save_checkpoint(folder / "step_000001.safetensors", "additive", config,
                           build("additive", config).state_dict(), step=1,
                           meta={"data": {"kind": "synthetic", "task": "circle2square"}})


def stages(model: Path, inputs: Path, out: Path, count: int) -> dict[str, float]:
    """Seconds per picture of each stage, in one thread, over `count` pictures."""
    torch.set_num_threads(1)
    module = EngineArgs("eager", model, "cpu").open()
    files = sorted(inputs.iterdir())[:count]
    took = {"decode": 0.0, "engine": 0.0, "encode_write": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        start = time.perf_counter()
        picture = images.decode_picture(path.read_bytes(), what=path.name).image
        x = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 127.5 - 1
        decoded = time.perf_counter()
        result = module.run({"image": x})
        ran = time.perf_counter()
        (out / path.name).with_suffix(".png").write_bytes(
            images.to_png(result["translation"][0], picture.size))
        took["decode"] += decoded - start
        took["engine"] += ran - decoded
        took["encode_write"] += time.perf_counter() - ran
    return {k: v / len(files) for k, v in took.items()}


def run(count: int, side: int, workers: int, ngf: int, n_blocks: int, root: Path) -> dict:
    inputs = root / "in"
    picture_bytes = make_inputs(inputs, count, side)
    model = make_model(root, ngf, n_blocks)
    options = FolderOptions(progress=False, html=False)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    local = translate_folder(EngineArgs("eager", model, "cpu").open(), inputs, root / "local",
                             options)
    local_s = time.perf_counter() - start
    torch.set_num_threads(1)
    import ray
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    start = time.perf_counter()
    remote = translate_with_ray(EngineArgs("eager", model, "cpu"), inputs, root / "ray",
                                options, workers=workers)
    ray_s = time.perf_counter() - start
    ray.shutdown()
    assert len(local.translated) == len(remote.translated) == count
    per = stages(model, inputs, root / "stages", min(count, 20))
    worker_s = sum(per.values())
    efficiency = (count / ray_s) / (workers / worker_s)
    return {"pictures": count, "side": side, "picture_bytes": picture_bytes, "ngf": ngf,
            "n_blocks": n_blocks, "workers": workers, "local_s": local_s,
            "ray_start_s": ray_start_s, "ray_s": ray_s, "stages_s": per,
            "worker_picture_s": worker_s, "efficiency": efficiency,
            "machine": sysinfo.machine()}


def report(r: dict) -> str:
    per = r["stages_s"]
    lines = [f"# Folder translation: local command against the Ray job ({r['pictures']} "
             f"pictures)", "",
             f"Machine: {sysinfo.describe(r['machine'])}.",
             f"Pictures: {r['side']}x{r['side']} JPEG (~{r['picture_bytes'] // 1024} KiB); "
             f"additive translator ngf {r['ngf']}, {r['n_blocks']} blocks, eager fp32.", "",
             "| job | wall s | pictures/s |", "|---|---:|---:|",
             f"| local (one process, {r['machine']['cpu_count']} torch threads) | "
             f"{r['local_s']:.1f} | {r['pictures'] / r['local_s']:.2f} |",
             f"| Ray, {r['workers']} workers (1 thread each), job | {r['ray_s']:.1f} | "
             f"{r['pictures'] / r['ray_s']:.2f} |",
             f"| Ray start (ray.init), once per job | {r['ray_start_s']:.1f} | |", "",
             "One picture in one thread: " + ", ".join(
                 f"{k.replace('_', ' + ')} {v * 1e3:.1f} ms" for k, v in per.items())
             + f" = {r['worker_picture_s'] * 1e3:.1f} ms; the engine is "
             f"{per['engine'] / r['worker_picture_s']:.0%} of it.",
             f"Ray's efficiency here: {r['efficiency']:.0%} of {r['workers']} x the one-thread "
             "rate.", "", "## Projection for a cluster (not measured)", "",
             "W workers reach W x efficiency / (seconds a picture); the input disk must serve "
             "W x that many pictures a second.", "",
             "| workers | pictures/s | input MB/s needed |", "|---:|---:|---:|"]
    for w in PROJECTED:
        rate = w * r["efficiency"] / r["worker_picture_s"]
        lines.append(f"| {w} | {rate:.0f} | {rate * r['picture_bytes'] / 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="20 pictures of 64x64, a tiny translator: checks the script runs")
    a = p.parse_args()
    count, side, ngf, blocks = (20, 64, 8, 1) if a.quick else (a.count, 256, 64, 9)
    root = Path(tempfile.mkdtemp(prefix="i2i-ray-bench-"))
    try:
        result = run(count, side, a.workers, ngf, blocks, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = result["machine"]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine['cpu']} {machine['cpu_count']} cores".lower())
    name = f"ray-throughput-{slug.strip('-')}" + ("-quick" if a.quick else "")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / f"{name}.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
