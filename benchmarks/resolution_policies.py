"""Resolution policies on a real-size picture: time, peak memory, and how well each keeps the
pixels the mask leaves alone.

    python benchmarks/resolution_policies.py --model exports/additive      # after make demo

Renders a detailed 2000x1500 picture of the demo's domain (light discs on a darker ground, with
fine texture, grain and thin lines), translates it with the additive export under each policy
(each in a process of its own, so the peak resident memory is that policy's), and writes
resolution-<machine>.md / .json and a side-by-side figure of 1:1 crops under --out. A
6000x4000 picture under `tile` gives the memory bound. PSNR is against the input, over the
pixels whose mask magnitude the policy itself reports below 0.005 ("outside the mask").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from i2i import sysinfo
from i2i.data.photo import render
from i2i.engines import open_engine
from i2i.runtime.resolution import Resolution
from i2i.runtime.translator import Request, Translator

POLICIES = ("native", "tile", "mask", "resize")
CALM = 0.005


def one(model: Path, policy: str, source: Path, out: Path, working: int | None) -> dict:
    """Run one policy (in this process) on the picture file `source` and save its translation
    and mask as .npy; the peak RSS covers decoding, the engine and the policy."""
    picture = Image.open(source).convert("RGB")
    size = picture.size
    engine = open_engine("onnxruntime", export_dir=model, max_batch_size=8)
    translator = Translator(engine, max_batch=8, resolution=Resolution(policy, working))
    request = Request({"image": picture})
    translator.translate_many([request])                       # warm-up: sessions, arenas
    started = time.perf_counter()
    result = translator.translate_many([request])[0]
    seconds = time.perf_counter() - started
    translation = result.outputs["translation"][0]
    mask = result.outputs["mask"][0].abs().amax(0)
    np.save(out / f"{policy}.translation.npy",
            ((translation.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    np.save(out / f"{policy}.calm.npy", (mask < CALM).numpy())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"policy": policy, "seconds": seconds, "peak_rss_mb": peak_mb,
            "size": list(size), "working": working}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def child(model: Path, policy: str, source: Path, out: Path, working: int | None = None
          ) -> dict:
    args = [sys.executable, __file__, "--model", str(model), "--one", policy, "--picture",
            str(source), "--out", str(out)]
    if working:
        args += ["--working", str(working)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def figure(picture: np.ndarray, outs: dict[str, np.ndarray], path: Path, crop: int = 320) -> None:
    """1:1 crops of the input and each policy's translation, side by side (edge of a disc)."""
    h, w = picture.shape[:2]
    top, left = int(0.45 * h) - crop // 2, int(0.3 * w + 0.28 * min(h, w)) - crop // 2
    tiles = [picture] + [outs[p] for p in POLICIES]
    canvas = Image.new("RGB", (len(tiles) * (crop + 8) + 8, crop + 32), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (t, label) in enumerate(zip(tiles, ("input", *POLICIES), strict=True)):
        canvas.paste(Image.fromarray(t[top:top + crop, left:left + crop]), (8 + i * (crop + 8), 8))
        draw.text((8 + i * (crop + 8), crop + 14), label, fill=(0, 0, 0))
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("exports/additive"))
    p.add_argument("--size", default="2000x1500")
    p.add_argument("--big", default="6000x4000", help="the picture for the tile memory bound")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--one", choices=POLICIES, help=argparse.SUPPRESS)
    p.add_argument("--working", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--picture", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    if args.one:
        print(json.dumps(one(args.model, args.one, args.picture, args.out, args.working)))
        return 0
    picture = np.asarray(render(*size))
    rows, outs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "picture.png"
        Image.fromarray(picture).save(source)
        for policy in POLICIES:
            row = child(args.model, policy, source, Path(tmp))
            outs[policy] = np.load(Path(tmp) / f"{policy}.translation.npy")
            calm = np.load(Path(tmp) / f"{policy}.calm.npy")
            row["outside_fraction"] = float(calm.mean())
            row["psnr_all_db"] = psnr(outs[policy], picture)
            row["psnr_outside_db"] = psnr(outs[policy][calm], picture[calm]) if calm.any() \
                else None
            row["max_level_change_outside"] = int(np.abs(
                outs[policy].astype(int) - picture.astype(int))[calm].max()) if calm.any() \
                else None
            rows.append(row)
            print(row, flush=True)
        big = tuple(int(v) for v in args.big.split("x"))
        render(*big).save(Path(tmp) / "big.png")
        (Path(tmp) / "big").mkdir()
        bound = child(args.model, "tile", Path(tmp) / "big.png", Path(tmp) / "big")
    machine = sysinfo.machine()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine['cpu']} {machine['cpu_count']} cores".lower())
    stem = args.out / f"resolution-{slug.strip('-')}"
    figure(picture, outs, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(
        {"machine": machine, "model": str(args.model), "rows": rows, "tile_bound": bound},
        indent=2) + "\n")
    stem.with_suffix(".md").write_text(report(machine, size, rows, bound, stem.name))
    print(f"wrote {stem}.md, .json, .png")
    return 0


def report(machine: dict, size: tuple[int, int], rows: list[dict], bound: dict,
           name: str) -> str:
    lines = [f"# Resolution policies on a {size[0]}x{size[1]} picture (additive demo export, "
             "onnxruntime)", "", f"Machine: {sysinfo.describe(machine)}.", "",
             "| policy | seconds | peak RSS | pixels outside the mask | PSNR there vs input | "
             "largest change there (8-bit levels) | PSNR vs input, whole picture |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shown = "-" if r["psnr_outside_db"] is None else f"{r['psnr_outside_db']:.1f} dB"
        worst = "-" if r["max_level_change_outside"] is None else r["max_level_change_outside"]
        lines.append(f"| {r['policy']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{100 * r['outside_fraction']:.2f}% | {shown} | {worst} | "
                     f"{r['psnr_all_db']:.1f} dB |")
    lines += ["", f"Tile memory bound: a {bound['size'][0]}x{bound['size'][1]} picture under "
              f"`tile` took {bound['seconds']:.1f} s with a peak RSS of "
              f"{bound['peak_rss_mb']:.0f} MB (the full-size outputs being accumulated, plus one "
              "row of 512x512 tiles in flight).", "",
              f"Figure: `{name}.png`, 1:1 crops at the edge of the large disc: input, native, "
              "tile, mask, resize.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(2)
    raise SystemExit(main())
