"""i2i-serve end to end: a real server process on a loopback port, the official tritonclient,
the curl-style image endpoint, bad input, the API key, metrics, a load test and SIGTERM."""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from PIL import Image

from i2i.models import load

from .server_utils import pixels, png_bytes, running, tiny_checkpoint

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    with running(["--checkpoint", str(checkpoint), "--max-batch", "8", "--max-delay-ms", "10",
                  "--api-key", KEY, "--max-body-mb", "1", "--max-pixels", "250000"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def module(checkpoint):
    return load(checkpoint)[0]


def images(n: int, seed: int, size: int = 16) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


def expected(module, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in module(torch.from_numpy(x)).items()}


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={**AUTH, **(headers or {})},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers if headers is not None else AUTH)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def png(width: int, height: int, seed: int = 0) -> bytes:
    return png_bytes(pixels(width, height, seed))


def auth() -> dict[str, str]:
    # A fresh dict each call: tritonclient adds Inference-Header-Content-Length to the dict
    # it is given, which would then leak into the next request.
    return dict(AUTH)


def test_tritonclient_gets_correct_translations(server, module):
    client = httpclient.InferenceServerClient(url=server.url[len("http://"):])
    assert client.is_server_live(headers=auth()) and client.is_server_ready(headers=auth())
    assert client.is_model_ready("additive", headers=auth())
    meta = client.get_model_metadata("additive", headers=auth())
    assert [t["name"] for t in meta["inputs"]] == ["image"]
    assert [t["name"] for t in meta["outputs"]] == ["translation", "mask"]
    x = images(3, 0)
    want = expected(module, x)
    for binary in (True, False):
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                   for n in ("translation", "mask")]
        result = client.infer("additive", [inp], outputs=outputs, headers=auth())
        for name in ("translation", "mask"):
            np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-5)
    result = client.infer("additive", [inp], headers=auth())      # no outputs named: all, binary
    np.testing.assert_allclose(result.as_numpy("mask"), want["mask"], atol=1e-5)


def test_translate_returns_a_png_at_the_input_size(server):
    status, body = post(f"{server.url}/v1/translate", png(30, 20))
    assert status == 200, body
    out = Image.open(io.BytesIO(body))
    assert out.format == "PNG" and out.size == (30, 20)
    status, mask = post(f"{server.url}/v1/translate?output=mask", png(30, 20))
    assert status == 200 and Image.open(io.BytesIO(mask)).size == (30, 20)
    _, weak = post(f"{server.url}/v1/translate?strength=0", png(30, 20))
    assert weak != body
    boundary = "i2iboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + \
        png(30, 20) + f"\r\n--{boundary}--\r\n".encode()
    status, multi = post(f"{server.url}/v1/translate", form,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and multi == body


def v2(x_shape, datatype="FP32", data=None, name="image") -> bytes:
    item = {"name": name, "shape": x_shape, "datatype": datatype,
            "data": data if data is not None else [0.0] * int(np.prod(x_shape))}
    return json.dumps({"inputs": [item]}).encode()


BAD = [
    ("/v1/translate", png(20, 20)[:60], 400, "could not be decoded"),
    ("/v1/translate", b"", 400, "empty"),
    ("/v1/translate", b"hello, this is text", 415, "not a PNG, JPEG or WebP"),
    ("/v1/translate", png(600, 500), 413, "300000 pixels; the limit is 250000"),
    ("/v1/translate", b"x" * (2 << 20), 413, "over the limit"),
    ("/v2/models/additive/infer", v2([1, 3, 16, 16], "INT32"), 400, "datatype INT32"),
    ("/v2/models/additive/infer", v2([1, 3, 16, 16], data=[0.0] * 10), 400, "needs 768 values"),
    ("/v2/models/additive/infer", json.dumps({"inputs": []}).encode(), 400, "missing input"),
    ("/v2/models/additive/infer", v2([1, 3, 16, 16], name="img"), 400, "unknown input 'img'"),
    ("/v2/models/additive/infer", v2([1, 3, 15, 16]), 400, "multiples of 4"),
    ("/v2/models/additive/infer", v2([1, 2, 16, 16]), 400, r"expected \[-1, 3, -1, -1\]"),
    ("/v2/models/additive/infer", b"{not json", 400, "not valid JSON"),
    ("/v2/models/adittive/infer", v2([1, 3, 16, 16]), 404, "unknown model 'adittive'"),
    ("/v1/translate?strength=abc", png(20, 20), 400, "strength must be a number, got 'abc'"),
    ("/v1/translate?strength=9", png(20, 20), 400,
     r"'strength' must lie in \[0, 4\]; it holds values from 9 to 9"),
    ("/v1/translate?strength=0.5&output=exemplar", png(20, 20), 400,
     r"output='exemplar' is not an output of additive; choose from \['translation', 'mask'\]"),
]


def test_translate_keeps_alpha_and_native_size_and_says_when_frames_were_dropped(server):
    rgba = np.dstack([pixels(37, 23, 5), np.tile(np.arange(37, dtype=np.uint8) * 6, (23, 1))])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    status, body = post(f"{server.url}/v1/translate?resolution=native", buffer.getvalue())
    out = Image.open(io.BytesIO(body))
    assert status == 200 and out.mode == "RGBA" and out.size == (37, 23)
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    frames = [Image.fromarray(pixels(20, 16, i)) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    request = urllib.request.Request(f"{server.url}/v1/translate", data=gif.getvalue(),
                                     method="POST", headers=auth())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert "first of 3 frames" in response.headers["i2i-note"]


def test_strength_picks_the_signature_that_runs_it_in_the_model(server):
    """?strength= and a KServe `strength` input run the model's strength signature: the same
    answer either way, and 0 gives the input back."""
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert list(client.get_model_metadata("additive", headers=auth())["signatures"]) == [
        "default", "strength"]
    image = httpclient.InferInput("image", list(x.shape), "FP32")
    image.set_data_from_numpy(x)
    strength = httpclient.InferInput("strength", [2, 1], "FP32")
    strength.set_data_from_numpy(np.array([[0.0], [1.0]], np.float32))
    scaled = client.infer("additive", [image, strength], headers=auth())
    plain = client.infer("additive", [image], headers=auth())
    np.testing.assert_allclose(scaled.as_numpy("translation")[0], x[0], atol=1e-6)
    np.testing.assert_allclose(scaled.as_numpy("translation")[1],
                               plain.as_numpy("translation")[1], atol=1e-5)
    _, zero = post(f"{server.url}/v1/translate?strength=0", png(16, 16))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(zero))),
                          np.asarray(Image.open(io.BytesIO(png(16, 16)))))


@pytest.mark.parametrize("path,body,status,message", BAD,
                         ids=[f"{i}-{b[0].split('/')[-1]}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_clear_4xx_and_the_server_stays_healthy(server, path, body, status,
                                                                  message):
    got, content = post(server.url + path, body)
    assert got == status, content
    assert re.search(message, json.loads(content)["error"]), content
    assert get(f"{server.url}/v2/health/ready")[0] == 200
    assert post(f"{server.url}/v2/models/additive/infer", v2([1, 3, 16, 16]))[0] == 200


def test_api_key(server):
    body = v2([1, 3, 16, 16])
    assert post(f"{server.url}/v2/models/additive/infer", body,
                {"Authorization": "Bearer wrong"})[0] == 401
    request = urllib.request.Request(f"{server.url}/v2/models/additive/infer", data=body,
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 401 and "API key" in json.loads(err.value.read())["error"]
    assert get(f"{server.url}/v2/health/live", headers={})[0] == 200   # health stays open


def test_load_64_clients_each_request_answered_once_and_batched(server, module):
    clients, per_client = 64, 20
    answers: dict[tuple[int, int], int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(per_client):
            x = images(1, 1000 * c + r)
            item = {"name": "image", "shape": list(x.shape), "datatype": "FP32",
                    "data": x.reshape(-1).tolist()}
            body = json.dumps({"id": f"{c}-{r}", "inputs": [item]}).encode()
            status, content = post(f"{server.url}/v2/models/additive/infer", body)
            if status != 200:
                errors.append(f"{c}-{r}: {status} {content[:200]}")
                continue
            reply = json.loads(content)
            out = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
                   for o in reply["outputs"]}
            want = expected(module, x)
            if not all(np.abs(out[k] - want[k]).max() < 1e-5 for k in want):
                errors.append(f"{c}-{r}: wrong output")
            with lock:
                key = tuple(int(v) for v in reply["id"].split("-"))
                answers[key] = answers.get(key, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:5]
    assert len(answers) == clients * per_client and set(answers.values()) == {1}
    text = get(f"{server.url}/metrics")[1].decode()
    single = float(re.search(r'i2i_batch_size_bucket\{le="1.0"\} (\S+)', text).group(1))
    total = float(re.search(r"i2i_batch_size_count (\S+)", text).group(1))
    assert total > 0 and single < total, "no batch larger than 1 was formed"
    assert re.search(r'i2i_requests_total\{endpoint="infer",status="200"\} \d+', text)
    assert "i2i_queue_seconds_bucket" in text and "i2i_compute_seconds_count" in text


def test_sigterm_drains_queued_requests_then_exits_0(checkpoint):
    with running(["--checkpoint", str(checkpoint), "--max-batch", "4",
                  "--max-delay-ms", "300"]) as proc:
        results: list[int] = []
        body = v2([1, 3, 16, 16])

        def send() -> None:
            request = urllib.request.Request(f"{proc.url}/v2/models/additive/infer",
                                             data=body, method="POST")
            with urllib.request.urlopen(request, timeout=60) as r:
                results.append(r.status)

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        import time
        time.sleep(0.15)                 # requests are inside their 300 ms batch window
        proc.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        assert results == [200] * 6
        assert proc.proc.wait(timeout=60) == 0
