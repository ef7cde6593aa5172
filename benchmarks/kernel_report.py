"""Turn the pytest-benchmark JSON of test_kernels_bench.py into a Markdown report.

    python benchmarks/kernel_report.py out/kernels.json [--out benchmarks/results]

Writes kernels-<device>.md and copies the JSON beside it: time per call, achieved GB/s on the
bytes floor, and the ratio of the Triton kernel against eager and torch.compile.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch


def load(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    rows = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        seconds = info.get("do_bench_ms", bench["stats"]["median"] * 1e3) / 1e3
        rows.append({**info, "seconds": seconds})
    return rows, data.get("machine_info", {})


def table(rows: list[dict]) -> list[str]:
    lines = ["| op | shape | dtype | impl | time | GB/s (floor bytes) | vs eager | vs compile |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["op"], tuple(r["shape"]), r["dtype"]), {})[r["impl"]] = r
    for (op, shape, dtype), impls in groups.items():
        for impl in ("triton", "eager", "compile", "copy"):
            if impl not in impls:
                continue
            r = impls[impl]
            gbs = r["moved_bytes"] / r["seconds"] / 1e9
            ratio = [f"{impls[o]['seconds'] / r['seconds']:.2f}x" if o in impls and impl ==
                     "triton" else "" for o in ("eager", "compile")]
            lines.append(f"| {op} | {'x'.join(map(str, shape))} | {dtype} | {impl} | "
                         f"{r['seconds'] * 1e3:.3f} ms | {gbs:.1f} | {ratio[0]} | {ratio[1]} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    rows, machine = load(args.json)
    if not rows:
        raise SystemExit(f"{args.json} holds no benchmark")
    device = rows[0]["device"]
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Kernel benchmarks on {device}", "",
             f"torch {torch.__version__}, Python {machine.get('python_version', '?')}. "
             "Copy = a device-to-device copy of x, the bandwidth ceiling. GB/s counts the "
             "bytes floor (inputs read once, outputs written once) for every implementation.",
             "", *table(rows), ""]
    if not any(r["impl"] == "triton" for r in rows):
        lines += ["The Triton kernels themselves were not timed: this machine has no GPU (on the "
                  "CPU they run only in the Triton interpreter, a test tool). On the CPU the "
                  "batch dimension of the issue's shapes is divided by I2I_BENCH_CPU_DIVISOR "
                  "(default 8).", ""]
    report = args.out / f"kernels-{slug}.md"
    report.write_text("\n".join(lines))
    shutil.copy(args.json, args.out / f"kernels-{slug}.json")
    print(report.read_text())


if __name__ == "__main__":
    main()
