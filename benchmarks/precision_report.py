"""Turn the pytest-benchmark JSON of test_precision_bench.py into a Markdown report.

    python benchmarks/precision_report.py out/precision.json [--out benchmarks/results]

Writes precision-<machine>.md and copies the JSON beside it: per configuration and batch, every
engine x precision with its median time per image, its speed against onnxruntime fp32 of the
same run and batch, its PSNR against eager fp32 on the timed images, and its export gate's
verdict and worst PSNR.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

CONFIGS = ("full", "demo", "trained")
CASES = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("openvino", "int8"), ("eager", "fp32"), ("eager", "bf16"),
         ("aoti", "fp32"))
BASE = ("onnxruntime", "fp32")


def load(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    rows = [{**bench["extra_info"], "seconds": bench["stats"]["median"],
             "rounds": bench["stats"]["rounds"]} for bench in data["benchmarks"]]
    return rows, data.get("machine_info", {})


def _order(row: dict) -> tuple:
    config = CONFIGS.index(row["config"]) if row["config"] in CONFIGS else len(CONFIGS)
    case = (row["engine"], row["precision"])
    return config, row["batch"], CASES.index(case) if case in CASES else len(CASES)


def _db(value: float | None) -> str:
    if value is None:
        return ""
    return "exact" if value == float("inf") else f"{value:.1f} dB"


def table(rows: list[dict]) -> list[str]:
    lines = ["| config | batch | engine | precision | per image | images/s | vs onnxruntime "
             "fp32 | PSNR vs eager fp32 | export gate | rounds |",
             "|---|---:|---|---|---:|---:|---:|---:|---|---:|"]
    base = {(r["config"], r["batch"]): r["seconds"] for r in rows
            if (r["engine"], r["precision"]) == BASE}
    for r in sorted(rows, key=_order):
        per_image = r["seconds"] / r["batch"]
        reference = base.get((r["config"], r["batch"]))
        speed = f"{reference / r['seconds']:.2f}x" if reference else ""     # > 1: faster
        gate = "" if r.get("gate_passed") is None else (
            f"{'pass' if r['gate_passed'] else 'MISS'} ({_db(r.get('gate_psnr'))}; "
            f"{r.get('gate_threshold')})")
        lines.append(f"| {r['config']} {'x'.join(map(str, r['size']))} | {r['batch']} | "
                     f"{r['engine']} | {r['precision']} | {per_image * 1e3:.1f} ms | "
                     f"{1 / per_image:.1f} | {speed} | {_db(r['psnr'])} | {gate} | "
                     f"{r['rounds']} |")
    return lines


def header(rows: list[dict], machine: dict) -> list[str]:
    first = rows[0]
    loads = [r["load"] for r in rows if "load" in r]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(first.get("versions", {}).items())
                         if k in ("torch", "onnxruntime", "openvino"))
    quick = ["**--quick run: a smoke check at the tiniest setting; these figures mean "
             "nothing.**", ""] if first.get("quick") else []
    calibration = first.get("calibration") or {}
    trained = next((r["checkpoint"] for r in rows if r["config"] == "trained"), "not run")
    return [f"# Precision and engine on {first['device']}", "", *quick,
            f"{versions}; Python {machine.get('python_version', '?')}; {first['threads']} "
            "intra-op threads for every engine. The 1-minute load average at the start of each "
            f"case ranged {min(loads):.2f}-{max(loads):.2f}.", "",
            "The additive generator: `full` (ngf 64, 9 blocks, 256x256) and `demo` (ngf 16, 3 "
            "blocks, 32x32) with random seeded weights, `trained` the demo's trained "
            f"checkpoint ({trained}). Every artifact comes from `i2i.export.build` (formats "
            "onnx, openvino, aoti; precisions bf16, int8); int8 is calibrated on "
            f"{calibration.get('images', '?')} images ({calibration.get('method', '?')}). "
            "`vs onnxruntime fp32`: its time over this row's, same configuration and batch, "
            "same run (> 1 is faster). `PSNR vs eager fp32`: the worst output on the timed "
            "images (circles of the test split that neither the calibration nor the gate "
            "used). `export gate`: the verdict over every signature (`default`, and `strength` "
            "with its knob at seeded values in 0..4), the worst PSNR and the threshold recorded "
            "in the manifest. Medians of the timed rounds.", ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    rows, machine = load(args.json)
    if not rows:
        raise SystemExit(f"{args.json} holds no benchmark (was it run with --benchmark-disable?)")
    slug = re.sub(r"[^a-z0-9]+", "-", rows[0]["device"].lower()).strip("-")
    quick = "-quick" if rows[0].get("quick") else ""
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"precision-{slug}{quick}.md"
    report.write_text("\n".join([*header(rows, machine), *table(rows), ""]))
    shutil.copy(args.json, args.out / f"precision-{slug}{quick}.json")
    print(report.read_text())


if __name__ == "__main__":
    main()
