"""The serving part of `make demo`: serve the exported model in-process, send the held-out test
images as concurrent requests through tritonclient (KServe v2) and /v1/translate, check the
answers against a direct engine call, and summarise latency and batch sizes."""

from __future__ import annotations

import io
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import pixels
from .engines import open_engine
from .runtime.inprocess import serving
from .runtime.server import ServerConfig


def serve_demo(export_dir: Path, images: torch.Tensor, out: Path, clients: int = 16) -> dict:
    """images: (N, 3, H, W) in [-1, 1] at the export's size. Writes out/served.png."""
    import tritonclient.http as httpclient

    engine = open_engine("onnxruntime", export_dir=export_dir)
    step = engine.spec.max_batch_size
    direct = torch.cat([engine.run({"image": images[i:i + step]})["translation"]
                        for i in range(0, len(images), step)])
    config = ServerConfig(max_batch=16, max_delay_ms=5.0, warmup=True)
    with serving(engine, config) as url:
        latencies: list[float] = []
        lock = threading.Lock()
        local = threading.local()      # tritonclient.http runs on gevent: one client per thread

        def kserve(i: int) -> np.ndarray:
            if not hasattr(local, "client"):
                local.client = httpclient.InferenceServerClient(url[len("http://"):])
            x = images[i:i + 1].numpy()
            inp = httpclient.InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            started = time.perf_counter()
            result = local.client.infer("additive", [inp])
            with lock:
                latencies.append(time.perf_counter() - started)
            return result.as_numpy("translation")[0]

        with ThreadPoolExecutor(clients) as pool:
            served = np.stack(list(pool.map(kserve, range(len(images)))))
        pngs = _translate_pngs(url, images[:8], clients)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    error = float(np.abs(served - direct.numpy()).max())
    batch_sum = float(re.search(r"^i2i_batch_size_sum (\S+)", metrics, re.M).group(1))
    batch_count = float(re.search(r"^i2i_batch_size_count (\S+)", metrics, re.M).group(1))
    _grid(images[:8], pngs, out / "served.png")
    lat = np.array(latencies) * 1e3
    return {"requests": len(images), "clients": clients, "max_abs_vs_engine": error,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "batches": batch_count, "mean_batch": batch_sum / max(1.0, batch_count)}


def _translate_pngs(url: str, images: torch.Tensor, clients: int) -> list[bytes]:
    """POST each image as a PNG to /v1/translate, concurrently; returns the PNG answers."""
    def one(x: torch.Tensor) -> bytes:
        buffer = io.BytesIO()
        pixels.to_image(x).save(buffer, format="PNG")
        request = urllib.request.Request(f"{url}/v1/translate", data=buffer.getvalue(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.read()
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, images))


def _grid(images: torch.Tensor, pngs: list[bytes], path: Path, scale: int = 4) -> None:
    """Top row: inputs; bottom row: what /v1/translate sent back."""
    tiles = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    w, h = tiles[0].size
    canvas = Image.new("RGB", (len(tiles) * (w + 2) + 2, 2 * (h + 2) + 2), "white")
    for i, (x, tile) in enumerate(zip(images, tiles, strict=True)):
        canvas.paste(pixels.to_image(x), (2 + i * (w + 2), 2))
        canvas.paste(tile, (2 + i * (w + 2), h + 4))
    canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST).save(path)
