"""Engine throughput on a CUDA GPU: the full additive generator (ngf 64, 9 blocks, 256x256,
random seeded weights) through every GPU engine that opens here, at batch 1 and 64.

    python benchmarks/gpu_engines.py --out out/gpu/engines.json [--quick]

Engines: eager fp32 and fp16, fused fp16 (Triton kernels, one CUDA graph per shape), aoti
(an AOTInductor package compiled for CUDA), onnxruntime fp32 and fp16 on its CUDA provider and
tensorrt fp16 where those are installed; one that cannot open here is listed with the reason.
Each engine is checked against eager fp32 (PSNR) before it is timed. Times include the copy of
the outputs back to the host (engine.run's contract); medians of --rounds runs after 3 warm-ups.
benchmarks/gpu_check.sh runs this as one of its steps.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from i2i import sysinfo
from i2i.engines import engine_availability, open_engine
from i2i.models import build as build_model
from i2i.models import make_config, save_checkpoint

CASES = [("eager", "fp32"), ("eager", "fp16"), ("fused", "fp16"), ("aoti", "fp32"),
         ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("tensorrt", "fp16")]
BATCHES = (1, 64)


def prepare(folder: Path, size: int, ngf: int, blocks: int, formats: tuple[str, ...]
            ) -> tuple[Path, Path | None]:
    """(checkpoint, export folder); no export where i2i.export cannot import (no onnx on the
    machine): the engines that need one are then listed as skipped, with that reason."""
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": ngf, "n_blocks": blocks})
    ckpt = save_checkpoint(folder / "step_000000.safetensors", "additive", config,
                           build_model("additive", config).state_dict(), step=0,
                           meta={"training": {"size": size}})
    try:
        from i2i.export import ExportOptions, build
    except ImportError as err:
        print(f"no export: i2i.export does not import here ({err})", flush=True)
        return ckpt, None
    out = build(ckpt, ExportOptions(out=folder / "export", formats=formats, fp16=True,
                                    batch=(1, max(BATCHES), max(BATCHES)), size=(size, size),
                                    allow_parity_failure=True))
    return ckpt, out


def measure(engine, batch: int, size: int, rounds: int) -> float:
    x = {"image": torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
         * 2 - 1}
    for _ in range(3):
        engine.run(x)
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        engine.run(x)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="ngf 8, 1 block, 64x64, no aoti")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_engines: torch sees no CUDA GPU; nothing to measure", file=sys.stderr)
        return 2
    size, ngf, blocks = (64, 8, 1) if args.quick else (256, 64, 9)
    formats = ("onnx",) if args.quick else ("onnx", "aoti")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, export = prepare(Path(tmp), size, ngf, blocks, formats)
        x = {"image": torch.rand(2, 3, size, size) * 2 - 1}
        want = open_engine("eager", checkpoint=ckpt, device="cuda", precision="fp32").run(x)
        for name, precision in CASES:
            why = engine_availability(name, export, ckpt, device="cuda", precision=precision)
            if why is not None:
                rows.append({"engine": name, "precision": precision, "skipped": why})
                print(f"{name} {precision}: skipped ({why})", flush=True)
                continue
            engine = open_engine(name, export_dir=export, checkpoint=ckpt, device="cuda",
                                 precision=precision, max_batch_size=max(BATCHES))
            quality = psnr(engine.run(x)["translation"], want["translation"])
            for batch in BATCHES:
                seconds = measure(engine, batch, size, args.rounds)
                rows.append({"engine": name, "precision": precision, "batch": batch,
                             "ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds,
                             "psnr_vs_eager_fp32": quality})
                print(f"{name} {precision} batch {batch}: {seconds * 1e3:.2f} ms, "
                      f"{batch / seconds:.1f} images/s, PSNR {quality:.1f} dB", flush=True)
            del engine
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": sysinfo.machine(), "size": size, "ngf": ngf,
                                    "n_blocks": blocks, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
