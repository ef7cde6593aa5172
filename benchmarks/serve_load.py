"""Closed-loop load on i2i-serve over HTTP and gRPC, and on Triton's own frontend (PyTriton serving
the same ONNX model through Triton's core) as a reference point: 1, 8 and 64 clients, each
sending its next request as soon as the last one is answered, against a small additive model on
this machine's CPU.

Reports throughput, p50/p99 latency, the mean batch the server formed (from each server's Triton
statistics: inference_count / execution_count), efficiency = served throughput / the engine's
own offline throughput at that batch size, and the CPU the load generator itself used (in
cores). The servers run as their own processes; the clients are threads of this process with one
keep-alive connection each (HTTP: the binary tensor extension; gRPC: raw tensor contents).
--server-cpus / --client-cpus pin the server (and the offline measurement) and the load
generator to separate cores; without them they share the machine.

    python benchmarks/serve_load.py --out benchmarks/results [--engine onnxruntime] [--seconds 10]
        [--server-cpus 1 --client-cpus 0] [--no-pytriton]
    python benchmarks/serve_load.py --engine auto     # the fastest CPU artifact that passed its
                                                      # gate (openvino/onnxruntime, bf16/int8)
    python benchmarks/serve_load.py --quick          # a smoke check: 1 s per level, no files

The export holds fp32, and with the openvino package also OpenVINO fp32/bf16/int8 and the
onnxruntime int8 graph (calibrated on the synthetic circles the weights' meta names), so
--engine auto has every CPU precision to choose from.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
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
Sender = Callable[[], None]                 # one request, answered; raises on failure


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


def picture() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)


def http_sender(port: int, model: str) -> Callable[[], Sender]:
    """A factory of HTTP senders (one keep-alive connection each), binary tensors both ways."""
    raw = picture().tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, SIZE, SIZE],
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "translation",
                                      "parameters": {"binary_data": True}}]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)),
               "Content-Type": "application/octet-stream"}

    def connect() -> Sender:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def send() -> None:
            conn.request("POST", f"/v2/models/{model}/infer", body=header + raw,
                         headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {body[:200]!r}")
        return send
    return connect


def grpc_sender(port: int, model: str) -> Callable[[], Sender]:
    """A factory of gRPC senders (one channel each), raw tensor contents."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=[1, 3, SIZE, SIZE])
    request.outputs.add(name="translation")
    request.raw_input_contents.append(picture().tobytes())

    def connect() -> Sender:
        stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]))
        return lambda: stub.ModelInfer(request, timeout=60)
    return connect


def closed_loop(connect: Callable[[], Sender], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        send, mine = connect(), []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                send()
            except Exception as err:
                failures.append(str(err)[:200])
                break
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started, cpu = time.perf_counter(), time.process_time()
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
            "p99_ms": float(np.percentile(lat, 99)),
            "client_cores": (time.process_time() - cpu) / elapsed}


def counts(http_port: int, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from Triton's statistics extension."""
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/stats"
    (stats,) = json.loads(urllib.request.urlopen(url, timeout=10).read())["model_stats"]
    return int(stats["inference_count"]), int(stats["execution_count"])


def wait_ready(http_port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/models/additive/ready"    # model loaded
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the server did not become ready")


def measure(label: str, connect, http_port: int, model: str, rates: dict[int, float],
            seconds: float, levels: tuple[int, ...]) -> list[dict]:
    rows = []
    for clients in levels:
        closed_loop(connect, clients, min(1.0, seconds))          # warm the connections
        before = counts(http_port, model)
        row = closed_loop(connect, clients, seconds)
        after = counts(http_port, model)
        row["frontend"] = label
        row["mean_batch"] = (after[0] - before[0]) / max(1, after[1] - before[1])
        row["offline_at_batch"] = at_batch(rates, row["mean_batch"])
        row["efficiency"] = row["throughput"] / row["offline_at_batch"]
        rows.append(row)
        print(row, flush=True)
    return rows


def pinned(cpus: set[int] | None):
    """A preexec_fn that pins a child process to `cpus` (None: no pinning)."""
    return None if not cpus else (lambda: os.sched_setaffinity(0, cpus))


def serve_pytriton(onnx: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    """(--pytriton-worker) Triton's core serving the ONNX model through onnxruntime in a PyTriton
    callable: max batch 64, a 5 ms dynamic batching window, loopback ports only."""
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(image):
        return {"translation": session.run(["translation"], {"image": image})[0]}

    config = TritonConfig(http_address="127.0.0.1", http_port=http_port,
                          grpc_address="127.0.0.1", grpc_port=grpc_port,
                          metrics_address="127.0.0.1", metrics_port=metrics_port)
    # loopback only: the statistics endpoint open, as i2i-serve's is
    with Triton(config=config, security_config=TritonSecurityConfig(
            restricted_endpoints=[])) as triton:
        triton.bind("additive", infer, inputs=[Tensor(name="image", dtype=np.float32,
                                                      shape=(3, SIZE, SIZE))],
                    outputs=[Tensor(name="translation", dtype=np.float32,
                                    shape=(3, SIZE, SIZE))],
                    config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=5000)))
        triton.serve()


def run_servers(args, export: Path, ckpt: Path, rates: dict[int, float]) -> list[dict]:
    levels = (1, 8) if args.quick else CLIENTS
    server_cpus = args.server_cpus
    http_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "i2i.runtime.cli", "--export", str(export), "--checkpoint",
         str(ckpt), "--engine", args.engine, "--port", str(http_port), "--grpc-port",
         str(grpc_port), "--max-batch", str(MAX_BATCH), "--max-delay-ms",
         str(args.max_delay_ms), "--max-queue", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(server_cpus))
    rows = []
    try:
        wait_ready(http_port, server)
        rows += measure("i2i HTTP", http_sender(http_port, "additive"), http_port, "additive",
                        rates, args.seconds, levels)
        rows += measure("i2i gRPC", grpc_sender(grpc_port, "additive"), http_port, "additive",
                        rates, args.seconds, levels)
    finally:
        server.terminate()
        server.wait(timeout=60)
    if args.no_pytriton:
        return rows
    ports = [free_port() for _ in range(3)]
    # PyTriton's stub links the first libpython the loader finds: this interpreter's own.
    libs = [sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH", "")]
    reference = subprocess.Popen(
        [sys.executable, __file__, "--pytriton-worker", str(export / "model.onnx"),
         *map(str, ports)], env={**os.environ, "LD_LIBRARY_PATH": ":".join(filter(None, libs))},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(server_cpus))
    try:
        wait_ready(ports[0], reference)
        rows += measure("PyTriton HTTP", http_sender(ports[0], "additive"), ports[0],
                        "additive", rates, args.seconds, levels)
        rows += measure("PyTriton gRPC", grpc_sender(ports[1], "additive"), ports[0],
                        "additive", rates, args.seconds, levels)
    finally:
        reference.terminate()
        reference.wait(timeout=60)
    return rows


def cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--server-cpus", type=cpus, help="pin the servers and the offline "
                   "measurement to these cores, e.g. 1")
    p.add_argument("--client-cpus", type=cpus, help="pin the load generator, e.g. 0")
    p.add_argument("--no-pytriton", action="store_true", help="leave out the PyTriton reference")
    p.add_argument("--quick", action="store_true", help="1 s per level at 1 and 8 clients; "
                   "print, write nothing")
    p.add_argument("--pytriton-worker", nargs=4, metavar=("ONNX", "HTTP", "GRPC", "METRICS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.pytriton_worker:
        onnx, *ports = args.pytriton_worker
        return serve_pytriton(onnx, *map(int, ports))
    if args.quick:
        args.seconds = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, export = prepare(Path(tmp))
        if args.server_cpus:
            os.sched_setaffinity(0, args.server_cpus)     # offline on the server's cores,
            torch.set_num_threads(len(args.server_cpus))  # with the threads a server started
                                                          # there has (OpenMP reads the mask)
        engine = open_engine(args.engine, export_dir=export, checkpoint=ckpt,
                             max_batch_size=MAX_BATCH)
        args.served = f"{engine.name} {engine.spec.precision}"
        print(engine.spec.choice or args.served, flush=True)
        rates = offline(engine, (1, 8, 32) if args.quick else (1, 2, 4, 8, 16, 32, 64))
        del engine
        if args.client_cpus:
            os.sched_setaffinity(0, args.client_cpus)
        rows = run_servers(args, export, ckpt, rates)
    if not args.quick:
        write(args.out, args, rates, rows)


def write(out: Path, args, rates: dict[int, float], rows: list[dict]) -> None:
    machine = sysinfo.machine()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine['cpu']} {machine['cpu_count']} cores".lower())
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.engine == "onnxruntime" else f"-{args.engine}"
    pinning = (f"server and offline engine pinned to cores {sorted(args.server_cpus)}, load "
               f"generator to {sorted(args.client_cpus)}"
               if args.server_cpus and args.client_cpus else
               "servers, offline engine and load generator share the machine's cores")
    lines = [f"# Serving under closed-loop load: i2i-serve (HTTP, gRPC) and Triton's frontend "
             f"({args.engine} engine: {args.served})", "",
             f"Machine: {sysinfo.describe(machine)}. Additive model, ngf {CONFIG['ngf']}, "
             f"{CONFIG['n_blocks']} blocks, {SIZE}x{SIZE}, random seeded weights; max batch "
             f"{MAX_BATCH}, max delay {args.max_delay_ms} ms; {args.seconds:.0f} s per load "
             f"level; {pinning}. PyTriton: Triton's core with the same ONNX model on "
             "onnxruntime in a Python-backend callable (a reference point).", "",
             "| frontend | clients | requests | images/s | p50 | p99 | mean batch | offline "
             "images/s at that batch | efficiency | load generator (cores) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['frontend']} | {r['clients']} | {r['requests']} | "
                     f"{r['throughput']:.1f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
                     f"{r['mean_batch']:.1f} | {r['offline_at_batch']:.1f} | "
                     f"{r['efficiency']:.2f} | {r['client_cores']:.2f} |")
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
