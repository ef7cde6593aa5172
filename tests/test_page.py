"""The web page's server side over plain HTTP: the page and its files (open with an API key),
GET /v1/models, the sample pictures, the JSON answer of /v1/translate with its batches and
timing, the Server-Timing header, several engines in one server, and every new error."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from i2i.data.shapes import SyntheticShapes
from i2i.runtime import images
from i2i.runtime.cli import main as serve_main

from .server_utils import (
    decoded,
    multipart,
    pixels,
    png_bytes,
    running,
    tiny_checkpoint,
    tiny_lomit_checkpoint,
    tiny_maskcyclegan_checkpoint,
)

KEY = "page-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    """Two engines (eager first, fused) behind an API key."""
    with running(["--checkpoint", str(checkpoint), "--engine", "eager,fused", "--api-key", KEY,
                  "--max-delay-ms", "1"]) as proc:
        yield proc


def request(url: str, body: bytes | None = None, headers: dict | None = None
            ) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET (body None) or POST."""
    req = urllib.request.Request(url, data=body, headers=headers or {},
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def translate(url: str, png: bytes, query: str = "", headers: dict | None = None
              ) -> tuple[int, dict, bytes]:
    body, form = multipart({"image": png})
    return request(f"{url}/v1/translate{query}", body, {**AUTH, **form, **(headers or {})})


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def data_pixels(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    return decoded(base64.b64decode(url[len(prefix):]))


def test_the_page_and_its_files_need_no_key(server):
    status, headers, body = request(server.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="/page/page.js">' in body
    for name, kind in [("page.js", "text/javascript"), ("page.css", "text/css")]:
        status, headers, body = request(f"{server.url}/page/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and body
    # nothing fetched from elsewhere at run time
    for name in ("index.html", "page.js", "page.css"):
        assert b"http://" not in request(f"{server.url}/page/{name}")[2].replace(
            b"http://127.0.0.1", b"")
        assert b"https://" not in request(f"{server.url}/page/{name}")[2]


def test_an_unknown_page_file_is_a_404_naming_the_files(server):
    status, _, body = request(server.url + "/page/../server.py")
    assert status == 404
    status, _, body = request(server.url + "/page/secret.py")
    assert status == 404 and "no such page file 'secret.py'" in error_of(body)
    assert "page.js" in error_of(body)


def test_the_api_behind_the_page_needs_the_key(server):
    for path in ("/v1/models", "/v1/samples/0.png"):
        status, _, body = request(server.url + path)
        assert status == 401 and "API key" in error_of(body)


def test_models_describes_the_model_by_kinds_and_the_engines(server):
    status, _, body = request(server.url + "/v1/models", headers=AUTH)
    assert status == 200
    info = json.loads(body)
    assert info["model"] == "additive" and info["default_size"] == [16, 16]
    assert info["images"] == ["image"]
    assert info["knobs"] == {"strength": [0.0, 4.0]}
    assert info["mask"] is None
    assert set(info["signatures"]) == {"default", "strength"}
    kinds = {t["name"]: t["kind"] for t in info["signatures"]["default"]["outputs"]}
    assert kinds == {"translation": "image", "mask": "signed_mask"}
    assert info["resolution"] == ["auto", "native", "tile", "mask", "resize"]
    assert info["mask_schemes"] == ["center", "rects"]
    assert [e["name"] for e in info["engines"]] == ["eager", "fused"]
    assert all(e["precision"] == "fp32" and e["device"] == "cpu" for e in info["engines"])


def test_samples_are_the_synthetic_domain_at_the_model_size(server):
    status, headers, body = request(server.url + "/v1/samples/2.png", headers=AUTH)
    assert status == 200 and headers["content-type"] == "image/png"
    image, _ = SyntheticShapes("circle2square", 16, split="test").sample("A", 2)
    assert body == images.to_png(image, (16, 16))
    other = request(server.url + "/v1/samples/2.png?domain=B", headers=AUTH)[2]
    assert other != body and Image.open(io.BytesIO(other)).size == (16, 16)


@pytest.mark.parametrize("path, status, message", [
    ("/v1/samples/6.png", 404, "no sample 6; samples are numbered 0 to 5"),
    ("/v1/samples/x.png", 404, "samples are named N.png"),
    ("/v1/samples/1.jpg", 404, "samples are named N.png"),
    ("/v1/samples/1.png?domain=C", 400, "domain must be one of A, B, got 'C'"),
])
def test_a_wrong_sample_says_what_exists(server, path, status, message):
    got, _, body = request(server.url + path, headers=AUTH)
    assert got == status and message in error_of(body)


def test_the_json_answer_has_every_output_the_mask_and_the_batches(server):
    png = png_bytes(pixels(37, 23, seed=5))
    status, headers, body = translate(server.url, png, "?strength=0.5", JSON)
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer["outputs"]) == {"translation", "mask"}
    assert answer["mask_name"] == "mask" and answer["mask"] == answer["outputs"]["mask"]
    assert answer["engine"] == "eager" and answer["precision"] == "fp32"
    assert answer["size"] == [37, 23]
    assert [b["rows"] for b in answer["batch"]] == [1]
    assert set(answer["timing_ms"]) == {"queue", "compute", "total"}
    assert answer["timing_ms"]["total"] >= answer["timing_ms"]["compute"] > 0
    # the same pixels as the PNG answers for each output
    for name in ("translation", "mask"):
        _, _, png_answer = translate(server.url, png, f"?strength=0.5&output={name}")
        assert np.array_equal(data_pixels(answer["outputs"][name]), decoded(png_answer))


def test_a_tiled_picture_reports_every_batch(server):
    png = png_bytes(pixels(40, 40, seed=6))
    _, _, body = translate(server.url, png, "?resolution=tile&working=16", JSON)
    answer = json.loads(body)
    pieces = sum(b["pieces"] for b in answer["batch"])
    assert pieces == 9                                  # 3 x 3 tiles of 16 with overlap 4
    assert sum(b["rows"] for b in answer["batch"]) >= pieces


def test_the_png_answer_carries_server_timing_and_the_batch(server):
    status, headers, body = translate(server.url, png_bytes(pixels(20, 12, seed=7)))
    assert status == 200 and headers["content-type"] == "image/png"
    timing = dict(part.strip().split(";dur=") for part in headers["server-timing"].split(","))
    assert set(timing) == {"queue", "compute", "total"}
    assert float(timing["total"]) >= float(timing["compute"]) > 0
    assert headers["i2i-batch"] == "1"


def test_engine_picks_one_of_the_engines_loaded(server):
    png = png_bytes(pixels(24, 16, seed=8))
    answers = {}
    for name in ("eager", "fused"):
        status, _, body = translate(server.url, png, f"?engine={name}", JSON)
        assert status == 200, body
        answers[name] = json.loads(body)
        assert answers[name]["engine"] == name
    eager = data_pixels(answers["eager"]["outputs"]["translation"])
    fused = data_pixels(answers["fused"]["outputs"]["translation"])
    assert np.abs(eager - fused).max() <= 1             # fp32 both: at most PNG rounding


def test_an_unknown_engine_lists_the_loaded_ones(server):
    status, _, body = translate(server.url, png_bytes(pixels(16, 16, seed=9)),
                                "?engine=tensorrt")
    assert status == 400
    assert error_of(body).startswith("engine 'tensorrt' is not loaded; this server runs "
                                     "eager, fused")


def test_an_error_asked_for_as_json_is_the_error(server):
    status, _, body = translate(server.url, b"not a picture", "", JSON)
    assert status == 415 and "image is not a PNG, JPEG or WebP image" in error_of(body)


def test_a_mask_model_answers_the_mask_it_used(tmp_path):
    checkpoint = tiny_maskcyclegan_checkpoint(tmp_path)
    with running(["--checkpoint", str(checkpoint), "--engine", "eager"]) as proc:
        info = json.loads(request(proc.url + "/v1/models")[2])
        assert info["mask"] == {"name": "mask", "required": True}
        png = png_bytes(pixels(21, 17, seed=3))
        body, form = multipart({"image": png})
        status, _, raw = request(f"{proc.url}/v1/translate?mask=rects&seed=3", body,
                                 {**form, **JSON})
        assert status == 200, raw
        answer = json.loads(raw)
        assert set(answer["outputs"]) == {"translation", "mask"}
        assert answer["mask_name"] == "mask"
        _, _, used = request(f"{proc.url}/v1/translate?mask=rects&seed=3&output=mask", body,
                             form)
        assert np.array_equal(data_pixels(answer["mask"]), decoded(used))


def test_an_exemplar_model_answers_each_output_at_its_picture_size(tmp_path):
    checkpoint = tiny_lomit_checkpoint(tmp_path)
    with running(["--checkpoint", str(checkpoint), "--engine", "eager"]) as proc:
        info = json.loads(request(proc.url + "/v1/models")[2])
        assert info["images"] == ["image", "exemplar"]
        assert info["mask"] == {"name": "mask", "required": False}
        over = {t["name"]: t.get("over") for t in info["signatures"]["default"]["outputs"]}
        assert over["exemplar_mask"] == "exemplar"
        body, form = multipart({"image": png_bytes(pixels(37, 23, seed=1)),
                                "exemplar": png_bytes(pixels(20, 16, seed=2))})
        status, _, raw = request(f"{proc.url}/v1/translate", body, {**form, **JSON})
        assert status == 200, raw
        answer = json.loads(raw)
        assert answer["mask_name"] == "mask" and answer["size"] == [37, 23]
        sizes = {name: data_pixels(url).shape[:2] for name, url in answer["outputs"].items()}
        assert sizes == {"translation": (23, 37), "mask": (23, 37), "exemplar_mask": (16, 20)}


@pytest.mark.parametrize("engines, message", [
    ("eager,eager", "names an engine twice"),
    ("eager,auto", "auto chooses one engine; use it alone"),
    ("eager,", "list engines by name"),
])
def test_a_wrong_engine_list_says_how_to_write_it(checkpoint, capsys, engines, message):
    assert serve_main(["--checkpoint", str(checkpoint), "--engine", engines]) == 2
    assert message in capsys.readouterr().err


def test_folder_translation_takes_one_engine(checkpoint, tmp_path, capsys):
    code = serve_main(["--checkpoint", str(checkpoint), "--engine", "eager,fused",
                       "--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "--input-dir translates with one engine" in capsys.readouterr().err


def test_the_engines_of_one_server_serve_one_model(checkpoint, tmp_path):
    from i2i.engines import open_engine
    from i2i.runtime.server import create_app
    additive = open_engine("eager", checkpoint=checkpoint, device="cpu")
    other = open_engine("fused", checkpoint=tiny_maskcyclegan_checkpoint(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="the engines of one server must serve one model"):
        create_app(additive, None, [other])
    with pytest.raises(ValueError, match="engine 'eager' is named twice"):
        create_app(additive, None, [additive])
