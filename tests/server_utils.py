"""A real i2i-serve process on a free loopback port, and the requests, pixels and tiny
checkpoints the end-to-end server tests share."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import tritonclient.http as httpclient
from PIL import Image

from i2i.export import ExportOptions
from i2i.export import build as build_export
from i2i.models import build, make_config, save_checkpoint

T = TypeVar("T")


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1})
    module = build("additive", config)
    return save_checkpoint(folder / "step_000001.safetensors", "additive", config,
                           module.state_dict(), step=1,
                           meta={"data": {"kind": "synthetic", "task": "circle2square"},
                                 "training": {"size": 16}})


def tiny_lomit_checkpoint(folder: Path, seed: int = 0, size: int = 16) -> Path:
    """A random-weight LOMIT (image + exemplar -> translation, mask, exemplar_mask)."""
    torch.manual_seed(seed)
    config = make_config("lomit", {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8,
                                   "mask_layers": 2})
    module = build("lomit", config)
    return save_checkpoint(folder / "step_000001.safetensors", "lomit", config,
                           module.state_dict(), step=1, meta={"training": {"size": size}})


def tiny_maskcyclegan_checkpoint(folder: Path, seed: int = 0, size: int = 16) -> Path:
    """A random-weight Mask CycleGAN (image + mask -> translation)."""
    torch.manual_seed(seed)
    config = make_config("maskcyclegan", {"ngf": 4, "n_blocks": 1})
    module = build("maskcyclegan", config)
    return save_checkpoint(folder / "step_000001.safetensors", "maskcyclegan", config,
                           module.state_dict(), step=1, meta={"training": {"size": size}})


def fixed_size_onnx_export(checkpoint: Path, out: Path, size: int) -> Path:
    """The ONNX export (and its variants) at size x size for batches of 1, 2 and 4: a fixed
    size exports in about half the time of a dynamic one."""
    return build_export(checkpoint, ExportOptions(out=out, formats=("onnx",), batch=(1, 2, 4),
                                                  size=(size, size), dynamic_size=False,
                                                  log=lambda *_: None))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], port: int, env: dict | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "i2i.runtime.cli", "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TRITON_INTERPRET": "0", **(env or {})})

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: "
                                   f"{self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def running(args: list[str]) -> Iterator[ServerProcess]:
    """An i2i-serve process with `args` on a free port, ready; stopped on the way out."""
    proc = ServerProcess(args, free_port())
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def batching_server(checkpoint: Path) -> AbstractContextManager[ServerProcess]:
    """An eager server batching up to 4 requests in a 100 ms window: concurrent requests from
    threads started together share a batch even on a busy machine."""
    return running(["--checkpoint", str(checkpoint), "--engine", "eager", "--max-batch", "4",
                    "--max-delay-ms", "100"])


def client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=url[len("http://"):])


def concurrently(url: str, n: int,
                 request: Callable[[httpclient.InferenceServerClient, int], T]) -> dict[int, T]:
    """request(client, i) for i in range(n), each on its own thread with its own client
    (tritonclient's clients are gevent-based: one each), all released at once so that the
    server can batch them. The answers by i; fails naming every request that raised."""
    start = threading.Barrier(n)
    results: dict[int, T] = {}
    errors: list[str] = []

    def send(i: int) -> None:
        c = client(url)
        start.wait()
        try:
            results[i] = request(c, i)
        except Exception as err:
            errors.append(f"{i}: {err}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def batch_totals(url: str) -> tuple[float, float]:
    """(batches run, rows run) so far, from /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    count = float(re.search(r"i2i_batch_size_count (\S+)", text).group(1))
    return count, float(re.search(r"i2i_batch_size_sum (\S+)", text).group(1))


def v2(**tensors: tuple[list[int], float]) -> bytes:
    """A JSON infer request: name=(shape, fill value)."""
    items = [{"name": name, "shape": shape, "datatype": "FP32",
              "data": [value] * int(np.prod(shape))} for name, (shape, value) in tensors.items()]
    return json.dumps({"inputs": items}).encode()


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def multipart(files: dict[str, bytes], boundary: str = "i2iboundary") -> tuple[bytes, dict]:
    """(body, headers) of a multipart/form-data upload with one file field per name."""
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
             f"filename=\"{name}.png\"\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
             for name, data in files.items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def translate(url: str, files: dict[str, bytes], query: str = "") -> tuple[int, bytes]:
    """POST the files to /v1/translate as a multipart form: (status, body)."""
    body, headers = multipart(files)
    return post(f"{url}/v1/translate{query}", body, headers)


def assert_refused(url: str, path: str, body: bytes, headers: dict | None, status: int,
                   message: str) -> None:
    """POST url + path gets `status` with an error matching `message`; the server stays ready."""
    got, content = post(url + path, body, headers)
    assert got == status, content
    assert re.search(message, json.loads(content)["error"]), content
    with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10) as r:
        assert r.status == 200


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of (H, W, 3) RGB or (H, W) grey uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(width: int, height: int, seed: int) -> np.ndarray:
    """(height, width, 3) random uint8 RGB."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """root with img{i}.png of each (width, height), pixels seeded 30 + i."""
    root.mkdir()
    for i, (width, height) in enumerate(sizes):
        (root / f"img{i}.png").write_bytes(png_bytes(pixels(width, height, 30 + i)))
    return root


def as_input(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1], as the endpoint's contract states."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


def decoded(body: bytes) -> np.ndarray:
    """A PNG's pixels as int64, to subtract without wrapping."""
    return np.asarray(Image.open(io.BytesIO(body))).astype(np.int64)


def as_png_pixels(translation: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) pixel values before PNG rounding."""
    return np.round((translation[0].transpose(1, 2, 0) + 1) * 127.5)
