"""i2i-serve with Mask CycleGAN end to end: image + mask over KServe v2 (the official
tritonclient, JSON and binary tensors), batching of concurrent requests with different masks,
/v1/translate with a mask file or a named scheme (?mask=center:0.5, ?mask=rects&seed=N), each
refusal with its 4xx, folder translation with --mask, and onnxruntime from the model's export.
A tiny random-weight Mask CycleGAN at 16x16 on the eager engine (a server process).

The model keeps no pixel exactly where the mask is 0 (its generator sees the whole masked image
and the context path is a learned map), so the tests compare answers with module(image, mask)
and check that the mask changes them; they assert nothing about the kept pixels.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from i2i.data.masks import parse_mask_spec
from i2i.engines import open_engine
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
    tiny_checkpoint,
    tiny_lomit_checkpoint,
    tiny_maskcyclegan_checkpoint,
    translate,
    v2,
)

SIZE = 16                      # the checkpoint's training size: /v1 images at it are not resized
INFER = "/v2/models/maskcyclegan/infer"
# center:0.5 on 16x16 by hand: a side of 8 pixels starting at (16 - 8) // 2 = 4.
CENTER = np.zeros((SIZE, SIZE), np.float32)
CENTER[4:12, 4:12] = 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_maskcyclegan_checkpoint(tmp_path_factory.mktemp("maskcyclegan"), size=SIZE)


@pytest.fixture(scope="module")
def module(checkpoint):
    return load(checkpoint)[0]


@pytest.fixture(scope="module")
def server(checkpoint):
    with batching_server(checkpoint) as proc:
        yield proc


def direct(module, image, mask) -> np.ndarray:
    """module(image, mask)["translation"] for numpy or torch inputs."""
    def tensor(a):
        return a if isinstance(a, torch.Tensor) else torch.from_numpy(a)
    with torch.no_grad():
        return module(tensor(image), tensor(mask))["translation"].numpy()


def images_of(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, SIZE, SIZE)).astype(np.float32)


def masks_of(n: int, seed: int) -> np.ndarray:
    """(n, 1, SIZE, SIZE) binary masks of random rectangles."""
    return parse_mask_spec("rects").sample(n, SIZE, SIZE, generator=seed).numpy()


def infer(c: httpclient.InferenceServerClient, image: np.ndarray, mask: np.ndarray,
          binary: bool = True) -> np.ndarray:
    inputs = []
    for name, x in (("image", image), ("mask", mask)):
        item = httpclient.InferInput(name, list(x.shape), "FP32")
        item.set_data_from_numpy(x, binary_data=binary)
        inputs.append(item)
    output = httpclient.InferRequestedOutput("translation", binary_data=binary)
    return c.infer("maskcyclegan", inputs, outputs=[output]).as_numpy("translation")


def close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_tritonclient_image_and_mask_match_the_module(server, module):
    c = client(server.url)
    assert c.is_server_ready() and c.is_model_ready("maskcyclegan")
    meta = c.get_model_metadata("maskcyclegan")
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [("image", [-1, 3, -1, -1]),
                                                                ("mask", [-1, 1, -1, -1])]
    assert [t["name"] for t in meta["outputs"]] == ["translation"]
    assert list(meta["signatures"]) == ["default"]          # the mask is required here
    image, mask = images_of(3, 0), masks_of(3, 1)
    mask[1] = np.random.default_rng(2).uniform(0, 1, (1, SIZE, SIZE))     # a soft mask too
    for binary in (True, False):
        close(infer(c, image, mask, binary), direct(module, image, mask))
    with pytest.raises(InferenceServerException, match=r"'mask' is \[3, 1, 8, 8\]"):
        infer(c, image, mask[:, :, :8, :8])


def test_the_same_image_under_two_masks_gives_two_answers(server, module):
    image = images_of(1, 3)
    c = client(server.url)
    got = {}
    for key, mask in {"center": CENTER[None, None], "outside": 1 - CENTER[None, None]}.items():
        got[key] = infer(c, image, mask)
        close(got[key], direct(module, image, mask))
    assert np.abs(got["center"] - got["outside"]).max() > 1e-2


def test_concurrent_requests_with_different_masks_each_get_their_own_answer(server, module):
    n = 6
    image = images_of(1, 4)                         # one image, a different mask per request
    masks = [masks_of(1, 10 + i) for i in range(n)]
    before = batch_totals(server.url)
    results = concurrently(server.url, n, lambda c, i: infer(c, image, masks[i]))
    for i in range(n):
        close(results[i], direct(module, image, masks[i]))
    assert len({results[i].tobytes() for i in range(n)}) == n      # n masks, n answers
    batches, rows = (a - b for a, b in zip(batch_totals(server.url), before, strict=True))
    assert rows == n and batches < n, f"{n} requests ran as {batches:g} batches"


def test_translate_with_a_named_scheme(server, module):
    image = pixels(SIZE, SIZE, 1)
    center = parse_mask_spec("center:0.5").sample(1, SIZE, SIZE, generator=0)
    assert np.array_equal(center[0, 0].numpy(), CENTER)
    status, body = translate(server.url, {"image": png_bytes(image)}, "?mask=center:0.5")
    assert status == 200, body
    want = direct(module, as_input(image), center)
    assert np.abs(decoded(body) - as_png_pixels(want)).max() <= 1            # PNG rounding
    # A raw body (no multipart) takes the scheme too.
    status, raw = post(f"{server.url}/v1/translate?mask=center:0.5", png_bytes(image),
                       {"Content-Type": "image/png"})
    assert status == 200 and raw == body
    status, shown = translate(server.url, {"image": png_bytes(image)},
                              "?mask=center:0.5&output=mask")
    assert status == 200 and np.array_equal(decoded(shown), CENTER * 255), shown


def test_rects_are_reproducible_by_seed(server, module):
    image = png_bytes(pixels(SIZE, SIZE, 2))
    drawn = {s: parse_mask_spec("rects").sample(1, SIZE, SIZE, generator=s) for s in (0, 5, 6)}
    assert not torch.equal(drawn[5], drawn[6])
    for seed in (5, 6):
        status, mask = translate(server.url, {"image": image}, f"?mask=rects&seed={seed}"
                                 "&output=mask")
        assert status == 200 and np.array_equal(decoded(mask), drawn[seed][0, 0].numpy() * 255)
        status, first = translate(server.url, {"image": image}, f"?mask=rects&seed={seed}")
        status_again, again = translate(server.url, {"image": image}, f"?mask=rects&seed={seed}")
        assert status == status_again == 200 and first == again
        want = direct(module, as_input(pixels(SIZE, SIZE, 2)), drawn[seed])
        assert np.abs(decoded(first) - as_png_pixels(want)).max() <= 1
    status, default = translate(server.url, {"image": image}, "?mask=rects&output=mask")
    assert status == 200 and np.array_equal(decoded(default), drawn[0][0, 0].numpy() * 255)


def test_rects_on_a_non_square_image_answer_at_its_size(server):
    files = {"image": png_bytes(pixels(20, 12, 3))}
    for output in ("translation", "mask"):
        status, body = translate(server.url, files, f"?mask=rects&seed=1&output={output}")
        assert status == 200, body
        assert Image.open(io.BytesIO(body)).size == (20, 12)


def test_translate_with_a_mask_file(server, module):
    image = pixels(SIZE, SIZE, 4)
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))   # (H, W)
    got = {}
    for key, grey in {"center": (CENTER * 255).astype(np.uint8), "ramp": ramp}.items():
        files = {"image": png_bytes(image), "mask": png_bytes(grey)}
        status, got[key] = translate(server.url, files)
        assert status == 200, got[key]
        # A grey level is a soft mask, pixel / 255, which the model takes as it is.
        want = direct(module, as_input(image), torch.from_numpy(grey / 255).float()[None, None])
        assert np.abs(decoded(got[key]) - as_png_pixels(want)).max() <= 1, key
        status, shown = translate(server.url, files, "?output=mask")
        assert status == 200 and np.array_equal(decoded(shown), grey), key
    status, scheme = translate(server.url, {"image": png_bytes(image)}, "?mask=center:0.5")
    assert status == 200 and scheme == got["center"]        # the same mask, either way


ONE = [1, 3, SIZE, SIZE]
GOOD = {"image": (ONE, 0.1), "mask": ([1, 1, SIZE, SIZE], 1.0)}
PNG = png_bytes(pixels(SIZE, SIZE, 9))
WIDE = png_bytes(pixels(20, 12, 9))
GREY = png_bytes(np.zeros((SIZE, SIZE), np.uint8))
BAD = [
    ("mask missing", INFER, v2(image=(ONE, 0.1)), None, 400, r"missing input\(s\) \['mask'\]"),
    ("mask of 2 rows", INFER, v2(image=(ONE, 0.1), mask=([2, 1, SIZE, SIZE], 1.0)), None, 400,
     r"'image' is \[1, 3, 16, 16\], 'mask' is \[2, 1, 16, 16\]"),
    ("mask of another size", INFER, v2(image=(ONE, 0.1), mask=([1, 1, SIZE, 8], 1.0)), None,
     400, r"'image' is \[1, 3, 16, 16\], 'mask' is \[1, 1, 16, 8\]"),
    ("mask of 3 channels", INFER, v2(image=(ONE, 0.1), mask=(ONE, 1.0)), None, 400,
     r"'mask' has shape \[1, 3, 16, 16\]; expected \[-1, 1, -1, -1\]"),
    ("mask above 1", INFER, v2(image=(ONE, 0.1), mask=([1, 1, SIZE, SIZE], 1.5)), None, 400,
     r"'mask' must lie in \[0, 1\]; it holds values from 1.5 to 1.5"),
    ("mask below 0", INFER, v2(image=(ONE, 0.1), mask=([1, 1, SIZE, SIZE], -0.5)), None, 400,
     r"'mask' must lie in \[0, 1\]; it holds values from -0.5 to -0.5"),
    ("empty mask", INFER, v2(image=([2, 3, SIZE, SIZE], 0.1), mask=([2, 1, SIZE, SIZE], 0.0)),
     None, 400, r"'mask' selects no pixel in row\(s\) \[0, 1\]: an empty mask has no defined"),
    ("empty mask file", "/v1/translate", *multipart({"image": PNG, "mask": GREY}), 400,
     r"'mask' selects no pixel in row\(s\) \[0\]"),
    ("no mask", "/v1/translate", *multipart({"image": PNG}), 400,
     r"maskcyclegan needs a mask .*multipart file 'mask', or name a scheme in the query, "
     r"e\.g\. \?mask=center:0\.5"),
    ("no mask, raw body", "/v1/translate", PNG, None, 400, r"maskcyclegan needs a mask"),
    ("file and scheme", "/v1/translate?mask=rects", *multipart({"image": PNG, "mask": GREY}),
     400, r"either the multipart file 'mask' or \?mask=SCHEME in the query, not both"),
    ("unknown scheme", "/v1/translate?mask=centre:0.5", *multipart({"image": PNG}), 400,
     r"unknown mask scheme 'centre' \(did you mean 'center'\?\); known: center, rects"),
    ("bad scheme argument", "/v1/translate?mask=center:2", *multipart({"image": PNG}), 400,
     r"center: scale must be in \(0, 1\], got 2"),
    ("attention over HTTP", "/v1/translate?mask=attention:/etc/hosts",
     *multipart({"image": PNG}), 400, r"would read a file on the server; .* upload it"),
    ("seed not a number", "/v1/translate?mask=rects&seed=abc", *multipart({"image": PNG}), 400,
     r"seed must be an integer from 0 to 2\*\*63 - 1, got 'abc'"),
    ("seed without a scheme", "/v1/translate?seed=3", *multipart({"image": PNG, "mask": GREY}),
     400, r"seed goes with a mask scheme"),
    ("mask file of another size", "/v1/translate",
     *multipart({"image": PNG, "mask": png_bytes(np.zeros((8, 12), np.uint8))}), 400,
     "mask is 12x8 pixels; it must have the image's size, 16x16"),
    ("mask file not an image", "/v1/translate", *multipart({"image": PNG, "mask": b"\0" * 40}),
     415, "mask is not a PNG"),
    ("unknown output", "/v1/translate?mask=rects&output=exemplar_mask",
     *multipart({"image": PNG}), 400,
     r"not an output of maskcyclegan; choose from \['translation', 'mask'\]"),
    ("strength", "/v1/translate?mask=rects&strength=0.5", *multipart({"image": PNG}), 400,
     "strength applies to the additive model only, not 'maskcyclegan'"),
]


def test_center_scheme_on_a_wide_picture_is_a_centered_square(server):
    status, mask = translate(server.url, {"image": WIDE}, "?mask=center:0.5&output=mask")
    assert status == 200, mask
    m = decoded(mask)                                           # (12, 20): a 6 x 6 square
    assert m.shape == (12, 20) and m.sum() == 36 * 255 and m[3:9, 7:13].all()


@pytest.mark.parametrize("case,path,body,headers,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_healthy(server, case, path, body,
                                                                    headers, status, message):
    assert_refused(server.url, path, body, headers, status, message)
    assert post(server.url + INFER, v2(**GOOD))[0] == 200


def test_a_scheme_fills_lomits_optional_mask_and_other_models_refuse_one(tmp_path):
    (tmp_path / "lomit").mkdir()
    lomit = tiny_lomit_checkpoint(tmp_path / "lomit", size=SIZE)
    module = load(lomit)[0]
    image, exemplar = pixels(SIZE, SIZE, 5), pixels(SIZE, SIZE, 6)
    files = {"image": png_bytes(image), "exemplar": png_bytes(exemplar)}
    with serving(open_engine("eager", checkpoint=lomit), ServerConfig(max_batch=2)) as url:
        status, body = translate(url, files, "?mask=center:0.5")
        assert status == 200, body
        with torch.no_grad():
            want = module.translate(as_input(image), as_input(exemplar),
                                    mask=torch.from_numpy(CENTER)[None, None])["translation"]
        assert np.abs(decoded(body) - as_png_pixels(want.numpy())).max() <= 1
        status, body = translate(url, files, "?mask=center:0.5&output=mask")
        assert status == 200 and np.array_equal(decoded(body), CENTER * 255)
    additive = tiny_checkpoint(tmp_path)
    with serving(open_engine("eager", checkpoint=additive), ServerConfig(max_batch=1)) as url:
        status, body = translate(url, {"image": PNG}, "?mask=center:0.5")
        assert status == 400 and json.loads(body)["error"] == ("additive takes no mask; leave "
                                                               "out ?mask=")


@pytest.fixture(scope="module")
def export(checkpoint, tmp_path_factory):
    return fixed_size_onnx_export(checkpoint, tmp_path_factory.mktemp("export"), SIZE)


def test_onnxruntime_serves_image_and_mask_from_the_export(export, module):
    manifest = json.loads((export / "manifest.json").read_text())
    assert [t["name"] for t in manifest["signatures"]["default"]["inputs"]] == ["image", "mask"]
    assert manifest["signatures"]["default"]["artifacts"]["onnx"]["passed"] is True
    engine = open_engine("onnxruntime", export_dir=export, device="cpu")
    with serving(engine, ServerConfig(max_batch=4)) as url:
        c = client(url)
        assert c.get_model_metadata("maskcyclegan")["platform"] == "i2i_onnxruntime"
        image, mask = images_of(2, 7), masks_of(2, 8)
        for binary in (True, False):
            close(infer(c, image, mask, binary), direct(module, image, mask))
        picture = pixels(SIZE, SIZE, 8)
        status, body = translate(url, {"image": png_bytes(picture)}, "?mask=center:0.5")
        assert status == 200, body
        want = direct(module, as_input(picture), torch.from_numpy(CENTER)[None, None])
        assert np.abs(decoded(body) - as_png_pixels(want)).max() <= 1
        status, body = post(url + INFER, v2(image=(ONE, 0.1), mask=([1, 1, SIZE, SIZE], 2.0)))
        assert status == 400 and "'mask' must lie in [0, 1]" in json.loads(body)["error"]
        assert post(url + INFER, v2(**GOOD))[0] == 200


def test_folder_translation_needs_a_mask(checkpoint, tmp_path, capsys):
    inputs = folder(tmp_path / "in", [(SIZE, SIZE)])
    args = ["--checkpoint", str(checkpoint), "--input-dir", str(inputs),
            "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    assert "maskcyclegan translates the pixels a mask marks (1 = translate, 0 = keep): pass " \
           "--mask SPEC_OR_FILE" in capsys.readouterr().err
    assert main([*args, "--mask", "centre"]) == 2
    assert re.search(r"--mask 'centre' is neither a mask image file nor a mask scheme: unknown "
                     r"mask scheme 'centre' \(did you mean 'center'\?\)", capsys.readouterr().err)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    assert main([*args, "--mask", str(tmp_path / "bad.png")]) == 2
    assert "is not a PNG, JPEG or WebP" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--mask", "center"]) == 2
    assert "--mask goes with --input-dir" in capsys.readouterr().err
    additive = tiny_checkpoint(tmp_path)
    assert main(["--checkpoint", str(additive), *args[2:], "--mask", "center"]) == 2
    assert "additive takes no mask; leave out --mask" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_folder_translation_with_a_scheme(checkpoint, module, tmp_path, capsys):
    inputs = folder(tmp_path / "in", [(SIZE, SIZE), (20, 12), (SIZE, SIZE)])
    args = ["--checkpoint", str(checkpoint), "--input-dir", str(inputs), "--no-progress",
            "--masks"]
    assert main([*args, "--output-dir", str(tmp_path / "center"), "--mask", "center:0.5"]) == 0
    out = capsys.readouterr().out
    assert "translated 3, already done 0, failed 0" in out
    center = tmp_path / "center"
    wide = decoded((center / "img1.mask.png").read_bytes())        # (12, 20): a 6 x 6 square
    assert wide.shape == (12, 20) and wide.sum() == 36 * 255 and wide[3:9, 7:13].all()
    want = direct(module, as_input(pixels(SIZE, SIZE, 30)), torch.from_numpy(CENTER)[None, None])
    assert np.abs(decoded((center / "img0.png").read_bytes()) - as_png_pixels(want)).max() <= 1
    assert np.array_equal(decoded((center / "img0.mask.png").read_bytes()), CENTER * 255)
    # rects: a mask per input, seeded by its file name, so a second run writes the same files.
    for run in ("rects1", "rects2"):
        assert main([*args, "--output-dir", str(tmp_path / run), "--mask", "rects"]) == 0
        assert "translated 3, already done 0, failed 0" in capsys.readouterr().out
    names = ["img0.png", "img0.mask.png", "img1.png", "img1.mask.png", "img2.png",
             "img2.mask.png"]
    for name in names:
        assert (tmp_path / "rects1" / name).read_bytes() == (tmp_path / "rects2" / name
                                                             ).read_bytes(), name
    assert Image.open(tmp_path / "rects1" / "img1.mask.png").size == (20, 12)
    masks = [decoded((tmp_path / "rects1" / f"img{i}.mask.png").read_bytes()) for i in (0, 2)]
    assert not np.array_equal(*masks)                        # two names, two masks
    assert set(np.unique(masks[0])) <= {0, 255}
    want = direct(module, as_input(pixels(SIZE, SIZE, 30)),
                  torch.from_numpy(masks[0] / 255).float()[None, None])
    assert np.abs(decoded((tmp_path / "rects1" / "img0.png").read_bytes())
                  - as_png_pixels(want)).max() <= 1


def test_folder_translation_with_one_mask_file(checkpoint, module, tmp_path, capsys):
    inputs = folder(tmp_path / "in", [(SIZE, SIZE)])
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
    (tmp_path / "mask.png").write_bytes(png_bytes(ramp))
    assert main(["--checkpoint", str(checkpoint), "--input-dir", str(inputs), "--output-dir",
                 str(tmp_path / "out"), "--no-progress", "--mask",
                 str(tmp_path / "mask.png")]) == 0
    assert "translated 1, already done 0, failed 0" in capsys.readouterr().out
    want = direct(module, as_input(pixels(SIZE, SIZE, 30)),
                  torch.from_numpy(ramp / 255).float()[None, None])
    got = decoded((tmp_path / "out" / "img0.png").read_bytes())
    assert np.abs(got - as_png_pixels(want)).max() <= 1
