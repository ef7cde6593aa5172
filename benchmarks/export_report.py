"""Turn the pytest-benchmark JSON of test_export_bench.py into a Markdown report.

    python benchmarks/export_report.py out/export.json [--out benchmarks/results]

Writes export-latency-<machine>.md and copies the JSON beside it: per configuration, batch and
engine, the median time per batch, per image, images/s and the speed against eager torch.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

ENGINES = ("eager", "onnxruntime", "aoti")
CONFIGS = ("small", "full")


def load(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    rows = [{**bench["extra_info"], "seconds": bench["stats"]["median"],
             "rounds": bench["stats"]["rounds"]} for bench in data["benchmarks"]]
    return rows, data.get("machine_info", {})


def _order(row: dict) -> tuple:
    config = CONFIGS.index(row["config"]) if row["config"] in CONFIGS else len(CONFIGS)
    engine = ENGINES.index(row["engine"]) if row["engine"] in ENGINES else len(ENGINES)
    return config, row["config"], row["batch"], engine


def table(rows: list[dict]) -> list[str]:
    lines = ["| config | size | batch | engine | median per batch | per image | images/s | "
             "vs eager | rounds |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    eager = {(r["config"], r["batch"]): r["seconds"] for r in rows if r["engine"] == "eager"}
    for r in sorted(rows, key=_order):
        per_image = r["seconds"] / r["batch"]
        base = eager.get((r["config"], r["batch"]))
        # > 1 means faster than eager torch on the same configuration and batch.
        speed = f"{base / r['seconds']:.2f}x" if base else ""
        config = f"{r['config']} (ngf {r['ngf']}, {r['n_blocks']} blocks)"
        lines.append(f"| {config} | {'x'.join(map(str, r['size']))} | {r['batch']} | "
                     f"{r['engine']} | {r['seconds'] * 1e3:.1f} ms | {per_image * 1e3:.1f} ms | "
                     f"{1 / per_image:.1f} | {speed} | {r['rounds']} |")
    return lines


def header(rows: list[dict], machine: dict) -> list[str]:
    first = rows[0]
    loads = [r["load"] for r in rows if "load" in r]
    busy = (f" The 1-minute load average at the start of each case ranged "
            f"{min(loads):.2f}-{max(loads):.2f}." if loads else "")
    return [f"# Export latency on {first['device']}", "",
            f"torch {first['torch']}, onnxruntime {first['onnxruntime']}, Python "
            f"{machine.get('python_version', '?')}; {first['threads']} intra-op threads for "
            "every engine." + busy, "",
            "The additive generator with random seeded weights, fp32, on the CPU. Eager: "
            "`module(**inputs)` in eval mode under `torch.no_grad()`. onnxruntime: the "
            "`torch.onnx.export(dynamo=True, opset 18)` graph with a dynamic batch on the CPU "
            "execution provider. aoti: an AOTInductor package (`i2i.export.aoti`, batch 1-8). "
            "Each engine's outputs matched eager within 1e-4 before it was timed. Medians of "
            "the timed rounds; `vs eager` > 1 is faster than eager.", ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    rows, machine = load(args.json)
    if not rows:
        raise SystemExit(f"{args.json} holds no benchmark (was it run with --benchmark-disable?)")
    slug = re.sub(r"[^a-z0-9]+", "-", rows[0]["device"].lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"export-latency-{slug}.md"
    report.write_text("\n".join([*header(rows, machine), *table(rows), ""]))
    shutil.copy(args.json, args.out / f"export-latency-{slug}.json")
    print(report.read_text())


if __name__ == "__main__":
    main()
