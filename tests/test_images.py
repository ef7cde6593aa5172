"""Decoding real photos (i2i.runtime.images): EXIF orientation, bit depths, palettes, CMYK,
grey, transparency, formats and frames, grey model inputs and the pixel-limit message. Every
picture is built here with PIL/numpy and every test checks decoded pixel values."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from i2i import pixels
from i2i.runtime import images
from i2i.runtime.protocol import ProtocolError

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(picture: images.Picture) -> np.ndarray:
    assert picture.image.mode == "RGB"
    return np.asarray(picture.image).astype(int)


def marked(width: int, height: int) -> Image.Image:
    """Grey picture with a red 16x16 block in its top-left corner (JPEG-safe: whole blocks)."""
    array = np.full((height, width, 3), 128, np.uint8)
    array[:16, :16] = RED
    return Image.fromarray(array)


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation                                   # Orientation
    return encode(marked(64, 32), "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_turns_clockwise():
    picture = images.decode_picture(exif_jpeg(6))
    assert picture.image.size == (32, 64)                       # stored 64x32, shown upright
    array = rgb(picture)
    assert np.abs(array[8, 24] - RED).max() <= 8                # top-left went to top-right
    assert np.abs(array[8, 8] - 128).max() <= 8
    assert np.abs(array[56, 8] - 128).max() <= 8


def test_exif_orientation_8_turns_anticlockwise():
    array = rgb(images.decode_picture(exif_jpeg(8)))
    assert array.shape == (64, 32, 3)
    assert np.abs(array[56, 8] - RED).max() <= 8                # top-left went to bottom-left
    assert np.abs(array[8, 8] - 128).max() <= 8


@pytest.mark.parametrize("fmt, dtype", [("PNG", "<u2"), ("TIFF", ">u2")])
def test_sixteen_bit_grey_scales_to_eight_bits(fmt, dtype):
    values = np.array([[0, 32768, 65535], [257, 16384, 49152]], dtype=dtype)
    img = Image.fromarray(values)
    assert img.mode in ("I;16", "I;16B")
    data = encode(img, fmt)
    want = [[0, 128, 255], [1, 64, 191]]
    grey = np.asarray(images.decode(data, mode="L")).astype(int)
    assert np.abs(grey - want).max() <= 1                       # 50% grey is 128, not white
    assert np.abs(rgb(images.decode_picture(data)) - np.array(want)[..., None]).max() <= 1


def png_rgb16(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL has no 48-bit mode to save)."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_png():
    values = np.array([[[32768, 16384, 65535], [0, 65535, 32768]]], np.uint16)
    array = rgb(images.decode_picture(png_rgb16(values)))
    assert np.abs(array - [[[128, 64, 255], [0, 255, 128]]]).max() <= 1


def palette_image(transparency=None) -> Image.Image:
    img = Image.fromarray(np.array([[0, 1, 1], [1, 0, 2]], np.uint8), mode="P")
    img.putpalette([200, 10, 30, 5, 250, 100, 0, 0, 255])
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


def test_palette():
    data = encode(palette_image(), "PNG")
    picture = images.decode_picture(data)
    assert picture.alpha is None and picture.note is None
    assert rgb(picture).tolist() == [[[200, 10, 30], [5, 250, 100], [5, 250, 100]],
                                     [[5, 250, 100], [200, 10, 30], [0, 0, 255]]]
    grey = np.asarray(images.decode(data, mode="L")).astype(int)
    assert np.abs(grey[0, 0] - (0.299 * 200 + 0.587 * 10 + 0.114 * 30)) <= 1


def test_palette_with_transparency_gives_alpha():
    data = encode(palette_image(transparency=b"\xff\x00\x80"), "PNG")
    picture = images.decode_picture(data)
    assert rgb(picture)[0].tolist() == [[200, 10, 30], [5, 250, 100], [5, 250, 100]]
    assert picture.alpha.mode == "L"
    assert np.asarray(picture.alpha).tolist() == [[255, 0, 0], [0, 255, 128]]


def test_cmyk_jpeg():
    cmyk = np.zeros((16, 48, 4), np.uint8)
    cmyk[:, 16:32, 0] = 255                                     # cyan ink
    cmyk[:, 32:, 3] = 255                                       # black ink
    data = encode(Image.fromarray(cmyk, mode="CMYK"), "JPEG", quality=100)
    array = rgb(images.decode_picture(data))
    assert np.abs(array[8, 8] - [255, 255, 255]).max() <= 4     # no ink: white
    assert np.abs(array[8, 24] - [0, 255, 255]).max() <= 4      # cyan
    assert np.abs(array[8, 40] - [0, 0, 0]).max() <= 4          # black


def test_grey():
    grey = np.array([[0, 50, 255], [128, 7, 200]], np.uint8)
    data = encode(Image.fromarray(grey), "PNG")
    assert np.array_equal(rgb(images.decode_picture(data)), np.repeat(grey[..., None], 3, 2))
    assert np.array_equal(np.asarray(images.decode(data, mode="L")), grey)


def test_grey_with_alpha():
    la = np.array([[[10, 255], [90, 0]], [[200, 128], [255, 64]]], np.uint8)
    picture = images.decode_picture(encode(Image.fromarray(la, mode="LA"), "PNG"))
    assert np.array_equal(rgb(picture), np.repeat(la[..., :1], 3, 2))
    assert np.array_equal(np.asarray(picture.alpha), la[..., 1])


def test_rgba_alpha_round_trip():
    rgba = np.random.default_rng(0).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    picture = images.decode_picture(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert np.array_equal(rgb(picture), rgba[..., :3])
    assert np.array_equal(np.asarray(picture.alpha), rgba[..., 3])
    back = Image.open(io.BytesIO(images.png_bytes(picture.image, picture.alpha)))
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), rgba)
    # An output of another size gets the alpha resized to it; without alpha, RGB as before.
    t = pixels.image_tensor(picture.image)
    wide = Image.open(io.BytesIO(images.to_png(t, (16, 12), picture.alpha)))
    assert wide.mode == "RGBA" and wide.size == (16, 12)
    flat = np.full((6, 8), 200, np.uint8)
    out = Image.open(io.BytesIO(images.to_png(t, (16, 12), Image.fromarray(flat))))
    assert np.asarray(out)[..., 3].tolist() == np.full((12, 16), 200).tolist()
    assert Image.open(io.BytesIO(images.to_png(t, (8, 6)))).mode == "RGB"
    grey = Image.open(io.BytesIO(images.grey_png(torch.full((1, 6, 8), 0.5), (8, 6),
                                                 picture.alpha)))
    assert grey.mode == "LA" and np.array_equal(np.asarray(grey)[..., 1], rgba[..., 3])
    assert np.asarray(grey)[0, 0, 0] == 128


def test_one_bit():
    bits = Image.fromarray(np.array([[0, 255, 0], [255, 255, 0]], np.uint8)).convert("1")
    data = encode(bits, "PNG")
    assert np.asarray(images.decode(data, mode="L")).tolist() == [[0, 255, 0], [255, 255, 0]]
    assert rgb(images.decode_picture(data))[1, 0].tolist() == [255, 255, 255]


def test_bmp():
    array = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    picture = images.decode_picture(encode(Image.fromarray(array), "BMP"))
    assert np.array_equal(rgb(picture), array) and picture.note is None


def test_tiff_and_its_pages():
    array = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(rgb(images.decode_picture(encode(Image.fromarray(array), "TIFF"))),
                          array)
    pages = encode(Image.new("RGB", (4, 4), RED), "TIFF", save_all=True,
                   append_images=[Image.new("RGB", (4, 4), BLUE)])
    picture = images.decode_picture(pages)
    assert rgb(picture)[0, 0].tolist() == list(RED)
    assert picture.note == "multi-frame TIFF: the first of 2 frames was used"


def test_mpo_first_image():
    try:
        data = encode(Image.new("RGB", (32, 16), RED), "MPO", save_all=True,
                      append_images=[Image.new("RGB", (32, 16), BLUE)], quality=95)
    except (KeyError, OSError, ValueError) as err:
        pytest.skip(f"this PIL cannot write MPO: {err}")
    assert Image.open(io.BytesIO(data)).format == "MPO"
    picture = images.decode_picture(data)
    assert np.abs(rgb(picture)[8, 8] - RED).max() <= 4
    assert picture.note == "multi-frame MPO: the first of 2 frames was used"


@pytest.mark.parametrize("fmt, options", [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_animation_first_frame_and_note(fmt, options):
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                  **options)
    picture = images.decode_picture(data)
    assert rgb(picture)[2, 3].tolist() == list(RED)
    assert picture.note == f"animated {fmt}: the first of 3 frames was used"


def test_grey_model_input():
    array = np.array([[[255, 0, 0], [0, 0, 0]], [[255, 255, 255], [0, 255, 0]]], np.uint8)
    img = Image.fromarray(array)
    grey = pixels.image_tensor(img, channels=1)
    luma = np.asarray(img.convert("L")).astype(np.float32)
    assert grey.shape == (1, 2, 2)
    assert torch.allclose(grey[0], torch.from_numpy(luma / 127.5 - 1))
    assert grey[0, 1, 0] == 1.0 and grey[0, 0, 1] == -1.0
    assert pixels.image_tensor(img).shape == (3, 2, 2)
    assert pixels.image_tensor(img.resize((6, 4)), channels=1).shape == (1, 4, 6)
    assert np.array_equal(pixels.image_array(grey), luma.astype(np.uint8))
    back = pixels.to_image(grey)
    assert back.mode == "L" and np.array_equal(np.asarray(back), luma.astype(np.uint8))
    out = Image.open(io.BytesIO(images.to_png(grey, (2, 2))))
    assert out.mode == "L" and np.array_equal(np.asarray(out), luma.astype(np.uint8))
    with pytest.raises(ValueError, match="pass channels=1 or channels=3"):
        pixels.image_tensor(img, channels=2)


def test_pixel_limit_names_the_setting_before_decoding():
    data = encode(Image.new("RGB", (600, 500)), "PNG")
    with pytest.raises(ProtocolError) as caught:
        images.decode(data[:120], max_pixels=250_000)          # header only: never decoded
    assert caught.value.status == 413
    assert re.search(r"600x500 = 300000 pixels; the limit is 250000 \(raise it with "
                     r"--max-pixels", str(caught.value))
    with pytest.raises(ProtocolError, match=r"raise it with max_pixels=") as caught:
        images.decode_picture(data, 250_000, limit_hint="max_pixels=")
    assert images.decode(data, max_pixels=300_000).getpixel((599, 499)) == (0, 0, 0)


@pytest.mark.parametrize("data, status, pattern", [
    (b"", 400, r"image is empty: send a PNG, JPEG, WebP, BMP, TIFF or GIF file"),
    (b"hello, this is text", 415, r"image is not a PNG, JPEG or WebP image"),
    (encode(Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 20, 3), np.uint8)),
            "PNG")[:200], 400, r"image could not be decoded \(.*\); is the file complete\?"),
    (encode(Image.new("RGB", (4, 4)), "PPM"), 415, r"image is PPM; send PNG, JPEG, WebP, BMP, "
                                                  r"TIFF or GIF"),
], ids=["empty", "text", "cut short", "another format"])
def test_refusals(data, status, pattern):
    with pytest.raises(ProtocolError) as caught:
        images.decode(data)
    assert caught.value.status == status and re.search(pattern, str(caught.value))
