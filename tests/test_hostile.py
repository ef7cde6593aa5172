"""Hostile input against a real i2i-serve process: every case gets a clear 4xx (or the
documented behaviour), and after each one the server answers health and a normal request
within a second."""

from __future__ import annotations

import io
import json
import math
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

from .server_utils import (
    multipart,
    png_bytes,
    post,
    running,
    tiny_checkpoint,
    tiny_maskcyclegan_checkpoint,
)

ONE = [1, 3, 16, 16]
LIMITS = ["--header-timeout-s", "1", "--body-timeout-s", "2", "--max-connections", "64"]


def v2(inputs: list[dict], **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def image(shape=ONE, value=0.1, name="image") -> dict:
    return {"name": name, "shape": shape, "datatype": "FP32",
            "data": [value] * math.prod(shape)}


NORMAL = v2([image()])


def assert_healthy(url: str, path: str = "/v2/models/additive/infer",
                   body: bytes = NORMAL) -> None:
    """Health and one normal request, each answered within a second."""
    started = time.monotonic()
    with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    status, content = post(url + path, body)
    assert status == 200, content
    assert time.monotonic() - started < 2.0, "health + a normal request took over 2 s"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("hostile"))
    with running(["--checkpoint", str(ckpt), "--engine", "eager", "--max-batch", "4",
                  "--max-run-pixels", str(256 * 256), *LIMITS]) as proc:
        yield proc


NESTED = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
BAD = [
    ("nested 5000 deep", "/v2/models/additive/infer", NESTED, 400, "nested more than"),
    ("nested 100000 deep", "/v2/models/additive/infer", b"[" * 100_000, 400, "nested more than"),
    ("shape overflowing int64", "/v2/models/additive/infer",
     v2([{"name": "image", "shape": [1, 3, 2 ** 32, 2 ** 32], "datatype": "FP32",
          "data": [0.0]}]), 413, "at most"),
    ("boolean shape", "/v2/models/additive/infer",
     v2([{"name": "image", "shape": [True, 3, 16, 16], "datatype": "FP32", "data": [0.0]}]),
     400, "invalid shape"),
    ("timeout NaN", "/v2/models/additive/infer", b'{"inputs": [], "parameters": '
     b'{"timeout": NaN}}', 400, "timeout must be a positive number"),
    ("timeout -5", "/v2/models/additive/infer", v2([image()], parameters={"timeout": -5}),
     400, "timeout must be a positive number"),
    ("timeout text", "/v2/models/additive/infer", v2([image()], parameters={"timeout": "abc"}),
     400, "timeout must be a positive number"),
    ("parameters a list", "/v2/models/additive/infer", v2([image()], parameters=[1]), 400,
     "parameters must be a JSON object"),
    ("name a list", "/v2/models/additive/infer",
     v2([{"name": ["image"], "shape": ONE, "datatype": "FP32", "data": [0.0] * 768}]), 400,
     "input name must be a string"),
    ("image above 1", "/v2/models/additive/infer", v2([image(value=5.0)]), 400,
     r"'image' must lie in \[-1, 1\]"),
    ("more pixels than one run may take", "/v2/models/additive/infer",
     v2([{"name": "image", "shape": [1, 3, 512, 512], "datatype": "FP16",
          "parameters": {"binary_data_size": 3 * 512 * 512 * 2}}]), 413,
     "at most 196608 per request"),
    ("unknown multipart field", "/v1/translate",
     None, 400, r"unknown multipart field\(s\) \['picture2'\]"),
]


@pytest.mark.parametrize("case,path,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_requests_get_a_clear_4xx(server, case, path, body, status, message):
    headers = None
    if body is None:                       # the multipart case
        body, headers = multipart({"image": png_bytes(np.zeros((16, 16, 3), np.uint8)),
                                   "picture2": b"x"})
    got, content = post(server.url + path, body, headers)
    assert got == status, content
    assert re.search(message, json.loads(content)["error"]), content
    assert_healthy(server.url)


def test_unknown_paths_and_methods_answer_json(server):
    status, content = post(server.url + "/v2/models/additive/nothing", b"{}")
    assert status == 404 and "no such endpoint" in json.loads(content)["error"]
    request = urllib.request.Request(f"{server.url}/v2/models/additive/infer", method="GET")
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as err:
        assert err.code == 405 and "GET is not allowed" in json.loads(err.read())["error"]
    else:
        raise AssertionError("GET on infer was answered")
    assert_healthy(server.url)


def test_a_big_picture_decodes_off_the_event_loop(server):
    """A small JPEG that claims 4000x4000 pixels takes seconds to decode; health answers
    within a second all the while."""
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000), (20, 30, 40)).save(buffer, format="JPEG", quality=5)
    done = threading.Event()

    def send() -> None:
        post(f"{server.url}/v1/translate?resolution=resize", buffer.getvalue())
        done.set()

    threading.Thread(target=send, daemon=True).start()
    time.sleep(0.2)
    while not done.is_set():
        started = time.monotonic()
        with urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - started < 1.0
        time.sleep(0.2)
    assert_healthy(server.url)


def test_a_decompression_bomb_is_413(server):
    header = io.BytesIO()
    Image.new("L", (1, 1)).save(header, format="PNG")
    data = bytearray(header.getvalue())
    data[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")   # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")          # its checksum
    status, content = post(f"{server.url}/v1/translate", bytes(data))
    assert status == 413, content
    assert_healthy(server.url)


def test_idle_and_slow_connections_are_closed(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"POST /v2/models/additive/infer HTTP/1.1\r\nHost: x\r\n")   # never ends
    parked = socket.create_connection(("127.0.0.1", server.port))
    parked.sendall(b"POST /v2/models/additive/infer HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Bearer k\r\nContent-Length: 1000000\r\n\r\n" + b"{" * 100)
    time.sleep(3.0)                       # header timeout 1 s, body timeout 2 s
    for sock in (*idle, slow):
        sock.settimeout(2)
        assert sock.recv(100) == b"", "an idle or slow connection was left open"
    parked.settimeout(2)
    answer = parked.recv(1000)
    assert b"408" in answer.split(b"\r\n")[0], answer
    for sock in (*idle, slow, parked):
        sock.close()
    assert_healthy(server.url)


def test_mask_schemes_that_would_spin_are_refused(tmp_path):
    ckpt = tiny_maskcyclegan_checkpoint(tmp_path)
    with running(["--checkpoint", str(ckpt), "--engine", "eager", "--max-batch", "2"]) as proc:
        picture = png_bytes(np.zeros((16, 16, 3), np.uint8))
        big = png_bytes(np.zeros((2048, 2048, 3), np.uint8))
        body = v2([image(), image([1, 1, 16, 16], 1.0, "mask")])
        for query, data, message in [
                ("?mask=rects:max_rects=1000000000", picture, "max_rects must be at most 100"),
                ("?mask=rects:min_area=0.999,min_size=0.001,max_size=0.001", big,
                 "1000 rectangles of at most max_size=0.001 covered")]:
            started = time.monotonic()
            status, content = post(f"{proc.url}/v1/translate{query}", data)
            assert status == 400 and message in json.loads(content)["error"], content
            assert time.monotonic() - started < 10
            assert_healthy(proc.url, "/v2/models/maskcyclegan/infer", body)


def test_sigterm_answers_every_request_already_sent(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    with running(["--checkpoint", str(ckpt), "--engine", "eager", "--max-batch", "8"]) as proc:
        request = (b"POST /v2/models/additive/infer HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/json\r\nContent-Length: "
                   + str(len(NORMAL)).encode() + b"\r\n\r\n" + NORMAL)
        socks = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(64)]
        for sock in socks:
            sock.sendall(request)
        time.sleep(0.3)
        proc.proc.send_signal(signal.SIGTERM)
        answered = 0
        for sock in socks:
            sock.settimeout(30)
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            answered += head.startswith(b"HTTP/1.1 200")
            sock.close()
        assert answered == 64
        assert proc.proc.wait(timeout=60) == 0



def test_a_full_queue_says_when_to_retry(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    with running(["--checkpoint", str(ckpt), "--engine", "eager", "--max-batch", "1",
                  "--max-queue", "1", "--max-delay-ms", "0"]) as proc:
        statuses: list[tuple[int, str | None]] = []

        def send() -> None:
            request = urllib.request.Request(f"{proc.url}/v2/models/additive/infer",
                                             data=v2([image([1, 3, 64, 64])]), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    statuses.append((r.status, None))
            except urllib.error.HTTPError as err:
                statuses.append((err.code, err.headers.get("Retry-After")))

        threads = [threading.Thread(target=send) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = [retry for status, retry in statuses if status == 503]
        assert refused and all(retry == "1" for retry in refused), statuses
        assert {status for status, _ in statuses} <= {200, 503}
        assert_healthy(proc.url)


def test_non_finite_outputs_are_not_written_as_bare_json_nan():
    import torch

    from i2i.runtime.protocol import InferRequest, ProtocolError, encode_infer

    request = InferRequest(None, {}, {"*": False}, None)
    with pytest.raises(ProtocolError, match="not finite .*binary_data") as caught:
        encode_infer("additive", request, {"translation": torch.tensor([[float("nan")]])})
    assert caught.value.status == 500
    body, _ = encode_infer("additive", InferRequest(None, {}, {"*": True}, None),
                           {"translation": torch.tensor([[float("nan")]])})
    assert b"NaN" not in body.split(b"}]}")[0]               # binary data carries it as bytes


def test_native_beyond_the_run_budget_is_413(server):
    big = png_bytes(np.zeros((300, 300, 3), np.uint8))      # 90000 > 65536 pixels
    status, content = post(f"{server.url}/v1/translate?resolution=native", big)
    assert status == 413 and "--max-run-pixels" in json.loads(content)["error"], content
    status, _ = post(f"{server.url}/v1/translate", big)      # auto: tiled instead
    assert status == 200
    assert_healthy(server.url)
