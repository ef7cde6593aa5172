"""i2i-serve with LOMIT end to end: image + exemplar pairs over KServe v2 (the official
tritonclient, JSON and binary tensors), batching of concurrent pairs, the optional user mask,
/v1/translate with image, exemplar and mask files, each refusal with its 4xx, and folder
translation with --exemplar. A tiny random-weight LOMIT at 16x16 on the eager engine, and on
onnxruntime from its export (model.onnx + model.masked.onnx; the export is most of the time)."""

from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from PIL import Image

from i2i.engines import check_batch, open_engine
from i2i.models import load
from i2i.runtime.cli import main
from i2i.runtime.inprocess import serving
from i2i.runtime.server import ServerConfig

from .server_utils import (
    as_input,
    as_png_pixels,
    assert_refused,
    batch_totals,
    batching_server,
    client,
    concurrently,
    decoded,
    fixed_size_onnx_export,
    folder,
    multipart,
    pixels,
    png_bytes,
    post,
    running,
    tiny_checkpoint,
    tiny_lomit_checkpoint,
    translate,
    v2,
)

SIZE = 16                      # the checkpoint's training size: /v1 images at it are not resized
OUTPUTS = ("translation", "mask", "exemplar_mask")
INFER = "/v2/models/lomit/infer"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_lomit_checkpoint(tmp_path_factory.mktemp("lomit"), size=SIZE)


@pytest.fixture(scope="module")
def module(checkpoint):
    return load(checkpoint)[0]


@pytest.fixture(scope="module")
def server(checkpoint):
    with batching_server(checkpoint) as proc:
        yield proc


@pytest.fixture(scope="module")
def export(checkpoint, tmp_path_factory):
    # model.onnx + model.masked.onnx at a fixed 16x16.
    return fixed_size_onnx_export(checkpoint, tmp_path_factory.mktemp("export"), SIZE)


@pytest.fixture(scope="module")
def onnx_server(export):
    with running(["--export", str(export), "--engine", "onnxruntime", "--max-batch",
                  "4"]) as proc:
        yield proc


def pair(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(image, exemplar), each (n, 3, size, size) float32 in [-1, 1]."""
    g = np.random.default_rng(seed)
    return tuple(g.uniform(-1, 1, (n, 3, size, size)).astype(np.float32) for _ in range(2))


def direct(module, image, exemplar, mask=None) -> dict[str, np.ndarray]:
    """The module's own outputs for numpy (or torch) inputs."""
    def tensor(a):
        return a if isinstance(a, torch.Tensor) or a is None else torch.from_numpy(a)
    with torch.no_grad():
        out = module.translate(tensor(image), tensor(exemplar), mask=tensor(mask))
    return {k: v.numpy() for k, v in out.items()}


def infer(c: httpclient.InferenceServerClient, tensors: dict[str, np.ndarray],
          binary: bool = True) -> dict[str, np.ndarray]:
    inputs = []
    for name, x in tensors.items():
        item = httpclient.InferInput(name, list(x.shape), "FP32")
        item.set_data_from_numpy(x, binary_data=binary)
        inputs.append(item)
    # The masked signature (a request with a mask) does not echo the mask it was given.
    names = [n for n in OUTPUTS if n not in tensors]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = c.infer("lomit", inputs, outputs=outputs, headers={})
    return {n: result.as_numpy(n) for n in names}


def close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in got:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=name)


def test_tritonclient_pairs_match_the_module(server, module):
    c = client(server.url)
    assert c.is_server_ready() and c.is_model_ready("lomit")
    meta = c.get_model_metadata("lomit")
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [("image", [-1, 3, -1, -1]),
                                                                ("exemplar", [-1, 3, -1, -1])]
    assert [t["name"] for t in meta["outputs"]] == list(OUTPUTS)
    masked = meta["signatures"]["masked"]["inputs"]
    assert [(t["name"], t["shape"]) for t in masked][2:] == [("mask", [-1, 1, -1, -1])]
    image, exemplar = pair(2, 0)
    want = direct(module, image, exemplar)
    # The two inputs play different parts: swapped, they give another translation.
    swapped = direct(module, exemplar, image)["translation"]
    assert np.abs(swapped - want["translation"]).max() > 1e-2
    for binary in (True, False):
        close(infer(c, {"image": image, "exemplar": exemplar}, binary), want)


def test_concurrent_pairs_are_batched_and_each_gets_its_own_answer(server, module):
    n = 6
    pairs = [pair(1, 100 + i) for i in range(n)]
    before = batch_totals(server.url)
    results = concurrently(server.url, n, lambda c, i: infer(c, {"image": pairs[i][0],
                                                                 "exemplar": pairs[i][1]}))
    for i, (image, exemplar) in enumerate(pairs):
        close(results[i], direct(module, image, exemplar))
    batches, rows = (a - b for a, b in zip(batch_totals(server.url), before, strict=True))
    assert rows == n and batches < n, f"{n} requests ran as {batches:g} batches"


def test_mask_input_replaces_the_computed_mask(server, module):
    image, exemplar = pair(2, 3)
    c = client(server.url)
    masks = {"zeros": np.zeros((2, 1, SIZE, SIZE), np.float32),
             "ones": np.ones((2, 1, SIZE, SIZE), np.float32),
             "random": np.random.default_rng(4).uniform(0, 1, (2, 1, SIZE, SIZE))
             .astype(np.float32)}
    got = {}
    for key, mask in masks.items():
        got[key] = infer(c, {"image": image, "exemplar": exemplar, "mask": mask})
        assert list(got[key]) == ["translation", "exemplar_mask"], key
        close(got[key], direct(module, image, exemplar, mask))
    assert np.abs(got["zeros"]["translation"] - got["ones"]["translation"]).max() > 1e-2
    computed = direct(module, image, exemplar)["mask"]
    assert np.abs(computed - masks["random"]).max() > 0.1       # the given mask was used


def test_masked_and_unmasked_requests_at_once_each_get_their_own_answer(server, module):
    pairs = [pair(1, 200 + i) for i in range(4)]
    mask = np.random.default_rng(5).uniform(0, 1, (1, 1, SIZE, SIZE)).astype(np.float32)

    def send(c: httpclient.InferenceServerClient, i: int) -> dict[str, np.ndarray]:
        tensors = {"image": pairs[i][0], "exemplar": pairs[i][1]}
        if i % 2:
            tensors["mask"] = mask
        return infer(c, tensors)

    results = concurrently(server.url, len(pairs), send)
    for i, (image, exemplar) in enumerate(pairs):
        close(results[i], direct(module, image, exemplar, mask if i % 2 else None))


def test_translate_endpoint_takes_image_and_exemplar(server, module):
    image, exemplar = pixels(SIZE, SIZE, 1), pixels(SIZE, SIZE, 2)
    want = direct(module, as_input(image), as_input(exemplar))
    files = {"image": png_bytes(image), "exemplar": png_bytes(exemplar)}
    status, body = translate(server.url, files)
    assert status == 200, body
    assert np.abs(decoded(body) - as_png_pixels(want["translation"])).max() <= 1  # PNG rounding
    for output in ("mask", "exemplar_mask"):
        status, body = translate(server.url, files, f"?output={output}")
        assert status == 200, body
        assert np.abs(decoded(body) - np.round(want[output][0, 0] * 255)).max() <= 1, output


def test_translate_endpoint_resizes_an_exemplar_of_another_size(server):
    files = {"image": png_bytes(pixels(20, 12, 1)), "exemplar": png_bytes(pixels(24, 28, 2))}
    status, body = translate(server.url, files)
    assert status == 200, body
    assert Image.open(io.BytesIO(body)).size == (20, 12)              # the image's size
    status, body = translate(server.url, files, "?output=exemplar_mask")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (24, 28)


def test_translate_endpoint_honours_a_mask_file(server, module):
    image, exemplar = pixels(SIZE, SIZE, 3), pixels(SIZE, SIZE, 4)
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))   # (H, W)
    files = {"image": png_bytes(image), "exemplar": png_bytes(exemplar)}
    got = {}
    for key, grey in {"zeros": np.zeros_like(ramp), "ones": np.full_like(ramp, 255),
                      "ramp": ramp}.items():
        status, got[key] = translate(server.url, {**files, "mask": png_bytes(grey)})
        assert status == 200, got[key]
        status, mask = translate(server.url, {**files, "mask": png_bytes(grey)}, "?output=mask")
        assert status == 200 and np.array_equal(decoded(mask), grey), key
    assert np.abs(decoded(got["zeros"]) - decoded(got["ones"])).max() > 10
    mask = torch.from_numpy(ramp / 255).float()[None, None]
    want = direct(module, as_input(image), as_input(exemplar), mask)["translation"]
    assert np.abs(decoded(got["ramp"]) - as_png_pixels(want)).max() <= 1


ONE = [1, 3, SIZE, SIZE]
PAIR = {"image": (ONE, 0.1), "exemplar": (ONE, -0.2)}
PNG = png_bytes(pixels(SIZE, SIZE, 9))
BAD = [
    ("exemplar missing", INFER, v2(image=(ONE, 0.1)), None, 400,
     r"missing input\(s\) \['exemplar'\]"),
    ("pair of 1 and 2 rows", INFER, v2(image=(ONE, 0.1), exemplar=([2, 3, SIZE, SIZE], 0.0)),
     None, 400, r"'image' is \[1, 3, 16, 16\], 'exemplar' is \[2, 3, 16, 16\]"),
    ("pair of two sizes", INFER, v2(image=(ONE, 0.1), exemplar=([1, 3, 32, 32], 0.0)), None,
     400, r"'image' is \[1, 3, 16, 16\], 'exemplar' is \[1, 3, 32, 32\]"),
    ("mask above 1", INFER, v2(**PAIR, mask=([1, 1, SIZE, SIZE], 1.5)), None, 400,
     r"'mask' must lie in \[0, 1\]; it holds values from 1.5 to 1.5"),
    ("mask of 3 channels", INFER, v2(**PAIR, mask=(ONE, 0.5)), None, 400,
     r"'mask' has shape \[1, 3, 16, 16\]; expected \[-1, 1, -1, -1\]"),
    ("mask of another size", INFER, v2(**PAIR, mask=([1, 1, 8, 8], 0.5)), None, 400,
     r"'mask' is \[1, 1, 8, 8\]"),
    ("no exemplar file", "/v1/translate", *multipart({"image": PNG}), 400,
     r"missing \['exemplar'\]"),
    ("raw body", "/v1/translate", PNG, None, 400, r"missing \['exemplar'\]"),
    ("malformed multipart", "/v1/translate", b"garbage",
     {"Content-Type": "multipart/form-data; boundary=abc"}, 400,
     r"the multipart form could not be read \(Invalid multipart data"),
    ("exemplar not an image", "/v1/translate",
     *multipart({"image": PNG, "exemplar": b"hello, text"}), 415,
     "exemplar is not a PNG, JPEG or WebP"),
    ("exemplar cut short", "/v1/translate", *multipart({"image": PNG, "exemplar": PNG[:80]}),
     400, "exemplar could not be decoded"),
    ("mask file of another size", "/v1/translate",
     *multipart({"image": PNG, "exemplar": PNG, "mask": png_bytes(np.zeros((8, 12), np.uint8))}),
     400, "mask is 12x8 pixels; it must have the image's size, 16x16"),
    ("mask file not an image", "/v1/translate",
     *multipart({"image": PNG, "exemplar": PNG, "mask": b"\x00" * 40}), 415,
     "mask is not a PNG"),
    ("strength", "/v1/translate?strength=0.5", *multipart({"image": PNG, "exemplar": PNG}),
     400, "strength applies to the additive model only, not 'lomit'"),
    ("unknown output", "/v1/translate?output=segmentation",
     *multipart({"image": PNG, "exemplar": PNG}), 400,
     r"not an output of lomit; choose from \['translation', 'mask', 'exemplar_mask'\]"),
]


@pytest.mark.parametrize("case,path,body,headers,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_healthy(server, case, path, body,
                                                                    headers, status, message):
    assert_refused(server.url, path, body, headers, status, message)
    assert post(server.url + INFER, v2(**PAIR))[0] == 200


def test_onnxruntime_serves_pairs_and_masks_from_the_export(onnx_server, export, module):
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["signatures"]["masked"]["artifacts"]["onnx"]["file"] == "model.masked.onnx"
    c = client(onnx_server.url)
    meta = c.get_model_metadata("lomit")
    assert meta["platform"] == "i2i_onnxruntime"
    assert [t["name"] for t in meta["inputs"]] == ["image", "exemplar"]
    assert [t["name"] for t in meta["signatures"]["masked"]["inputs"]][2:] == ["mask"]
    image, exemplar = pair(2, 7)
    for binary in (True, False):
        close(infer(c, {"image": image, "exemplar": exemplar}, binary),
              direct(module, image, exemplar))
    got = {}
    for value in (0.0, 1.0):
        mask = np.full((2, 1, SIZE, SIZE), value, np.float32)
        got[value] = infer(c, {"image": image, "exemplar": exemplar, "mask": mask})
        assert list(got[value]) == ["translation", "exemplar_mask"]
        close(got[value], direct(module, image, exemplar, mask))
    assert np.abs(got[0.0]["translation"] - got[1.0]["translation"]).max() > 1e-2


def test_an_engine_without_the_masked_graph_refuses_masks_with_a_400(export, tmp_path):
    stripped = tmp_path / "export"
    shutil.copytree(export, stripped, ignore=shutil.ignore_patterns("model.masked.onnx"))
    engine = open_engine("onnxruntime", export_dir=stripped)
    assert list(engine.spec.signatures) == ["default"]
    image, exemplar = (torch.from_numpy(a) for a in pair(1, 8))
    mask = torch.full((1, 1, SIZE, SIZE), 0.5)
    reason = r"has no fp32 masked variant \(model\.masked\.onnx\).*--engine eager"
    with pytest.raises(ValueError, match=reason):
        engine.run({"image": image, "exemplar": exemplar, "mask": mask})
    with serving(engine, ServerConfig(max_batch=2)) as url:
        status, content = post(url + INFER, v2(**PAIR, mask=([1, 1, SIZE, SIZE], 0.5)))
        assert status == 400 and re.search(reason, json.loads(content)["error"]), content
        status, content = translate(url, {"image": PNG, "exemplar": PNG,
                                          "mask": png_bytes(np.zeros((SIZE, SIZE), np.uint8))})
        assert status == 400 and re.search(reason, json.loads(content)["error"]), content
        assert post(url + INFER, v2(**PAIR))[0] == 200
        assert "masked" not in client(url).get_model_metadata("lomit")["signatures"]


def test_engines_check_pairs_and_masks(checkpoint, tmp_path):
    eager = open_engine("eager", checkpoint=checkpoint, max_batch_size=4)
    assert [t.name for t in eager.spec.signatures["masked"].inputs] == ["image", "exemplar",
                                                                         "mask"]
    image, exemplar = (torch.from_numpy(a) for a in pair(1, 6))
    mask = torch.full((1, 1, SIZE, SIZE), 0.5)
    assert check_batch(eager.spec, {"image": image, "exemplar": exemplar, "mask": mask}) == 1
    with pytest.raises(ValueError, match=r"inputs have different sizes \[\(16, 16\), \(32, 32\)"):
        check_batch(eager.spec, {"image": image, "exemplar": torch.zeros(1, 3, 32, 32)})
    with pytest.raises(ValueError, match=r"masked \['image', 'exemplar', 'mask'\]; inputs "
                                         r"\['image', 'mask'\] do not match"):
        check_batch(eager.spec, {"image": image, "mask": mask})
    additive = open_engine("eager", checkpoint=tiny_checkpoint(tmp_path))
    assert list(additive.spec.signatures) == ["default", "strength"]
    with pytest.raises(ValueError, match=r"do not match the engine's inputs \['image'\]$"):
        check_batch(additive.spec, {"image": image, "mask": mask})


def test_folder_translation_with_an_exemplar(checkpoint, module, tmp_path, capsys):
    inputs = folder(tmp_path / "in", [(SIZE, SIZE), (20, 12)])
    exemplar = pixels(SIZE, SIZE, 40)
    (tmp_path / "ref.png").write_bytes(png_bytes(exemplar))
    args = ["--checkpoint", str(checkpoint), "--input-dir", str(inputs),
            "--output-dir", str(tmp_path / "out"), "--no-progress", "--masks"]
    assert main(args) == 2
    assert "lomit translates each image towards an exemplar: pass --exemplar PATH" in \
        capsys.readouterr().err
    assert main([*args, "--exemplar", str(tmp_path / "none.png")]) == 2
    assert re.search(r"exemplar .*none\.png not found", capsys.readouterr().err)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    assert main([*args, "--exemplar", str(tmp_path / "bad.png")]) == 2
    assert "is not a PNG, JPEG or WebP" in capsys.readouterr().err
    assert main([*args, "--exemplar", str(tmp_path / "ref.png")]) == 0
    assert "translated 2, already done 0, failed 0" in capsys.readouterr().out
    out = tmp_path / "out"
    assert Image.open(out / "img1.png").size == (20, 12)
    mask = Image.open(out / "img1.mask.png")
    assert mask.size == (20, 12) and mask.mode == "L"
    # The 16x16 input and exemplar run at their own size: no resizing on the way.
    want = direct(module, as_input(pixels(SIZE, SIZE, 30)), as_input(exemplar))
    got = decoded((out / "img0.png").read_bytes())
    assert np.abs(got - as_png_pixels(want["translation"])).max() <= 1


def test_exemplar_flag_is_refused_where_it_does_not_apply(checkpoint, tmp_path, capsys):
    (tmp_path / "ref.png").write_bytes(PNG)
    additive = tiny_checkpoint(tmp_path)
    inputs = folder(tmp_path / "in", [(SIZE, SIZE)])
    assert main(["--checkpoint", str(additive), "--input-dir", str(inputs), "--output-dir",
                 str(tmp_path / "out"), "--exemplar", str(tmp_path / "ref.png"),
                 "--no-progress"]) == 2
    assert "additive takes no exemplar; leave out --exemplar" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--exemplar", str(tmp_path / "ref.png")]) == 2
    assert "--exemplar goes with --input-dir" in capsys.readouterr().err
