"""A real i2i-serve process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.models import build, make_config, save_checkpoint


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


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of (H, W, 3) RGB or (H, W) grey uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
