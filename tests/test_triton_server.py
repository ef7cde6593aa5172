"""A real Triton Inference Server on the repository i2i-export writes: the `tritonserver` binary
and Python backend of the nvidia-pytriton wheel, on loopback ports. Its pictures model must give
the same PNG as i2i's own /v1/translate over HTTP and gRPC; the ONNX and TensorRT models of the
same repository must parse, kept from loading only by their absent backends."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

import i2i
from i2i.engines import open_engine
from i2i.export import ExportOptions
from i2i.export import build as build_export
from i2i.export.triton_repo import io_from_onnx, write_repository
from i2i.runtime.inprocess import serving
from i2i.runtime.server import ServerConfig

from .server_utils import free_port, pixels, png_bytes, post, tiny_checkpoint

PACKAGE = importlib.util.find_spec("pytriton")
DIST = Path(PACKAGE.origin).parent / "tritonserver" if PACKAGE else None
BINARY = DIST / "bin" / "tritonserver" if DIST else None
pytestmark = pytest.mark.skipif(
    BINARY is None or not BINARY.is_file(),
    reason="no tritonserver binary: install the nvidia-pytriton wheel (pip install "
           "nvidia-pytriton), which ships it with the Python backend")
MISSING_BACKEND = "unable to find backend library"
CLIENTS = {"http": httpclient, "grpc": grpcclient}


def backends(folder: Path) -> Path:
    """A backend directory: the wheel's Python backend with the stub for this Python beside
    it (the wheel keeps one stub per Python version apart)."""
    python = folder / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(DIST / "backends" / "python" / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = DIST / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy(stub, python / stub.name)
    return folder


def environment() -> dict[str, str]:
    """The stub links the libpython the loader finds first: this interpreter's own; and it runs
    as the first python3 on PATH: this virtualenv's, whose site-packages hold i2i's engine."""
    libs = [sysconfig.get_config_var("LIBDIR"), str(DIST.parent.parent / "nvidia_pytriton.libs")]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(libs),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def index(http_port: int) -> dict[str, dict]:
    status, body = post(f"http://127.0.0.1:{http_port}/v2/repository/index", b"{}")
    assert status == 200, body
    return {m["name"]: m for m in json.loads(body)}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    checkpoint = tiny_checkpoint(root)
    out = build_export(checkpoint, ExportOptions(out=root / "export", formats=("onnx", "triton"),
                                                 batch=(1, 2, 4), size=(16, 16),
                                                 log=lambda *_: None))
    # a TensorRT model beside it: its config must parse though no plan can run here
    onnx = out / "model.onnx"
    plan = root / "model.plan"
    plan.write_bytes(b"not a plan: the tensorrt backend is absent, so it is never read")
    inputs, outputs = io_from_onnx(onnx)
    write_repository(out / "triton", "additive", inputs, outputs, onnx, plan, max_batch_size=4)
    return out


@pytest.fixture(scope="module")
def triton(export, tmp_path_factory):
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    log = tmp_path_factory.mktemp("log") / "tritonserver.log"
    args = [str(BINARY), "--model-repository", str(export / "triton"),
            "--backend-directory", str(backends(tmp_path_factory.mktemp("backends"))),
            "--exit-on-error=false", "--strict-readiness=false", "--exit-timeout-secs", "5"]
    for kind, port in ports.items():
        args += [f"--{kind}-address", "127.0.0.1", f"--{kind}-port", str(port)]
    # from the folder holding i2i/: the stub's sys.path starts with its working directory
    with open(log, "w") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=environment(),
                                cwd=Path(i2i.__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"tritonserver exited:\n{log.read_text()[-3000:]}"
            try:
                if index(ports["http"]).get("additive_pictures", {}).get("state") in (
                        "READY", "UNAVAILABLE"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        ports["log"] = log
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def reference(export):
    """i2i's own /v1/translate on the same export and engine."""
    engine = open_engine("onnxruntime", export_dir=export, max_batch_size=4)
    with serving(engine, ServerConfig(max_batch=4, warmup=False)) as url:
        yield url


def test_repository_loads_and_only_missing_backends_keep_models_out(triton):
    models = index(triton["http"])
    assert set(models) == {"additive", "additive_strength", "additive_trt", "additive_pictures"}
    pictures = models.pop("additive_pictures")
    assert pictures["state"] == "READY", (pictures, triton["log"].read_text()[-3000:])
    for name, model in models.items():
        assert model["state"] == "UNAVAILABLE" and MISSING_BACKEND in model["reason"], \
            f"{name}: {model}"


def send(triton: dict, protocol: str, files: dict[str, bytes], params: dict | None = None):
    """The PNG the pictures model answers for one row of `files`."""
    lib = CLIENTS[protocol]
    client = lib.InferenceServerClient(f"127.0.0.1:{triton[protocol]}")
    inputs = []
    for name, data in files.items():
        tensor = lib.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        inputs.append(tensor)
    result = client.infer("additive_pictures", inputs, parameters=params)
    return result.as_numpy("picture")[0, 0]


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels(width, height, 7)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


CASES = [("png", lambda: png_bytes(pixels(30, 20, 1)), {}),
         ("jpeg-mask-output", lambda: jpeg(24, 36), {"output": "mask"}),
         ("strength", lambda: png_bytes(pixels(17, 23, 2)), {"strength": 0.5}),
         ("tiled", lambda: png_bytes(pixels(40, 28, 3)), {"resolution": "tile", "working": 16})]


@pytest.mark.parametrize("protocol", list(CLIENTS))
@pytest.mark.parametrize("label,picture,params", CASES, ids=[c[0] for c in CASES])
def test_pictures_model_answers_as_v1_translate(triton, reference, protocol, label, picture,
                                                params):
    data = picture()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, want = post(f"{reference}/v1/translate?{query}", data)
    assert status == 200, want
    got = send(triton, protocol, {"image": data}, params or None)
    assert Image.open(io.BytesIO(got)).size == Image.open(io.BytesIO(data)).size
    assert got == want


@pytest.mark.parametrize("protocol", list(CLIENTS))
def test_pictures_model_refuses_a_broken_picture_clearly(triton, protocol):
    with pytest.raises(InferenceServerException) as err:
        send(triton, protocol, {"image": png_bytes(pixels(20, 20, 0))[:60]})
    assert "could not be decoded" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        send(triton, protocol, {"image": png_bytes(pixels(20, 20, 0))}, {"output": "exemplar"})
    assert "output='exemplar' is not an output of additive" in err.value.message()
