"""Closed-loop load on i2i-serve: 1, 8 and 64 clients, each sending its next request as soon as
the last one is answered, against a small additive model on this machine's CPU.

Reports throughput, p50/p99 latency, the mean batch size the server formed, and efficiency =
server throughput / the engine's own offline throughput at that batch size (the batcher and
HTTP overhead, measured). The server runs as its own process (i2i-serve); the clients are
threads of this process using keep-alive connections and the binary tensor extension.

    python benchmarks/serve_load.py --out benchmarks/results [--engine onnxruntime] [--seconds 10]
    python benchmarks/serve_load.py --engine auto     # the fastest CPU artifact that passed its
                                                      # gate (openvino/onnxruntime, bf16/int8)

The export holds fp32, and with the openvino package also OpenVINO fp32/bf16/int8 and the
onnxruntime int8 graph (calibrated on the synthetic circles the weights' meta names), so
--engine auto has every CPU precision to choose from.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from i2i import sysinfo
from i2i.engines import open_engine
from i2i.export import ExportOptions, build
from i2i.models import build as build_model
from i2i.models import make_config, save_checkpoint
from i2i.runtime.inprocess import free_port

SIZE = 64
CONFIG = {"ngf": 16, "n_blocks": 3}
CLIENTS = (1, 8, 64)
MAX_BATCH = 64


def prepare(folder: Path) -> tuple[Path, Path]:
    from i2i.engines.openvino import availability

    torch.manual_seed(0)
    config = make_config("additive", CONFIG)
    data = {"kind": "synthetic", "task": "circle2square", "seed": 0}
    ckpt = save_checkpoint(folder / "model.safetensors", "additive", config,
                           build_model("additive", config).state_dict(), step=0,
                           meta={"training": {"size": SIZE}, "data": data})
    vino = availability() is None
    export = build(ckpt, ExportOptions(out=folder / "export",
                                       formats=("onnx", "openvino") if vino else ("onnx",),
                                       precisions=("bf16", "int8") if vino else ("int8",),
                                       batch=(1, 32, MAX_BATCH), size=(SIZE, SIZE)))
    return ckpt, export


def offline(engine, batches=(1, 2, 4, 8, 16, 32, 64), repeats: int = 5) -> dict[int, float]:
    """Images per second of engine.run alone at each batch size (median of repeats)."""
    rates = {}
    for b in batches:
        x = {"image": torch.rand(b, 3, SIZE, SIZE) * 2 - 1}
        engine.run(x)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            engine.run(x)
            times.append(time.perf_counter() - started)
        rates[b] = b / statistics.median(times)
    return rates


def at_batch(rates: dict[int, float], mean_batch: float) -> float:
    """Offline throughput at a (fractional) batch size, interpolated in log batch."""
    sizes = sorted(rates)
    xs = np.log([float(s) for s in sizes])
    return float(np.interp(np.log(max(1.0, mean_batch)), xs, [rates[s] for s in sizes]))


def request_body() -> tuple[bytes, dict[str, str]]:
    x = (np.random.default_rng(0).uniform(-1, 1, (1, 3, SIZE, SIZE))).astype(np.float32)
    raw = x.tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "translation",
                                      "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def batch_counters(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    total = float(re.search(r"^i2i_batch_size_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^i2i_batch_size_count (\S+)", text, re.M).group(1))
    return total, count


def closed_loop(port: int, clients: int, seconds: float) -> dict:
    body, headers = request_body()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    failures = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            conn.request("POST", "/v2/models/additive/infer", body=body, headers=headers)
            response = response_data = conn.getresponse()
            response_data = response.read()
            if response.status != 200:
                failures.append(response_data[:200])
                break
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"requests failed: {failures[:3]}")
    lat = np.array(latencies) * 1e3
    return {"clients": clients, "requests": len(latencies), "seconds": elapsed,
            "throughput": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, export = prepare(Path(tmp))
        engine = open_engine(args.engine, export_dir=export, checkpoint=ckpt,
                             max_batch_size=MAX_BATCH)
        args.served = f"{engine.name} {engine.spec.precision}"
        print(engine.spec.choice or args.served, flush=True)
        rates = offline(engine)
        del engine
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "i2i.runtime.cli", "--export", str(export), "--checkpoint",
             str(ckpt), "--engine", args.engine, "--port", str(port), "--max-batch",
             str(MAX_BATCH), "--max-delay-ms", str(args.max_delay_ms), "--max-queue", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.5)
            rows = []
            for clients in CLIENTS:
                closed_loop(port, clients, 1.0)                      # warm the connections
                before = batch_counters(url)
                row = closed_loop(port, clients, args.seconds)
                after = batch_counters(url)
                row["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                row["offline_at_batch"] = at_batch(rates, row["mean_batch"])
                row["efficiency"] = row["throughput"] / row["offline_at_batch"]
                rows.append(row)
                print(row, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    write(args.out, args, rates, rows)


def write(out: Path, args, rates: dict[int, float], rows: list[dict]) -> None:
    machine = sysinfo.machine()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine['cpu']} {machine['cpu_count']} cores".lower())
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.engine == "onnxruntime" else f"-{args.engine}"
    lines = [f"# i2i-serve under closed-loop load ({args.engine} engine: {args.served})", "",
             f"Machine: {sysinfo.describe(machine)}. Additive model, ngf {CONFIG['ngf']}, "
             f"{CONFIG['n_blocks']} blocks, {SIZE}x{SIZE}, random seeded weights; server "
             f"max batch {MAX_BATCH}, max delay {args.max_delay_ms} ms; {args.seconds:.0f} s "
             "per load level; clients and server share the machine's cores.", "",
             "| clients | requests | images/s | p50 latency | p99 latency | mean batch | "
             "offline images/s at that batch | efficiency |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['throughput']:.1f} | "
                     f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['mean_batch']:.1f} | "
                     f"{r['offline_at_batch']:.1f} | {r['efficiency']:.2f} |")
    lines += ["", "Offline engine throughput (engine.run alone): " + ", ".join(
        f"batch {b}: {v:.0f} img/s" for b, v in rates.items()), ""]
    (out / f"serve-load-{slug.strip('-')}{suffix}.md").write_text("\n".join(lines))
    (out / f"serve-load-{slug.strip('-')}{suffix}.json").write_text(json.dumps(
        {"machine": machine, "engine": args.engine, "served": args.served, "offline": rates,
         "rows": rows},
        indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
