"""Pictures in and out of the runtime: decoding uploads safely, resizing to the model and back.

Decoding checks the format and the pixel count from the file header BEFORE decoding, so a
decompression bomb is refused without allocating it. A decoded picture is what a viewer shows:
EXIF orientation applied, the first frame of an animation, 16-bit samples scaled to 8 bits,
palette, CMYK, grey and 1-bit pictures converted, and any transparency kept apart as an alpha
channel (`decode_picture`) that the output helpers can put back. Outputs are PNG at the input's
size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .. import pixels
from ..models.spec import TensorSpec
from .protocol import ProtocolError

FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF", "MPO", "GIF"}
SEND = "PNG, JPEG, WebP, BMP, TIFF or GIF"
DEFAULT_MAX_PIXELS = 4096 * 4096
WIDE = {"I;16", "I;16L", "I;16B", "I;16N", "I"}           # 16-bit grey (and PIL's 32-bit int)
ANIMATED = {"GIF", "PNG", "WEBP"}                         # TIFF and MPO hold pages, not motion


@dataclass
class Picture:
    """A decoded picture: `image` 8-bit in the asked mode ("RGB" or "L"), `alpha` its
    transparency as an 8-bit "L" image of the same size (None when the file has none), and
    `note` a line for the user about what decoding chose (the first of several frames), or
    None."""
    image: Image.Image
    alpha: Image.Image | None = None
    note: str | None = None


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
           mode: str = "RGB", limit_hint: str = "--max-pixels") -> Image.Image:
    """`mode` ("RGB", or "L" for masks) 8-bit image from PNG/JPEG/WebP/BMP/TIFF/GIF bytes, as
    decode_picture reads it, without the alpha; ProtocolError (400/413/415) for anything else."""
    return decode_picture(data, max_pixels, what, mode, limit_hint).image


def decode_picture(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
                   mode: str = "RGB", limit_hint: str = "--max-pixels") -> Picture:
    """A Picture from PNG, JPEG (and camera MPO), WebP, BMP, TIFF or GIF bytes: upright by its
    EXIF orientation, its first frame, scaled to 8 bits and converted to `mode`, its alpha kept.
    ProtocolError: 400 empty or corrupt, 413 more than `max_pixels` pixels (the message names
    `limit_hint`, the setting that raises the limit), 415 another format."""
    img = _open(data, what, max_pixels)
    width, height = img.size
    if width * height > max_pixels:
        lever = f"raise it with {limit_hint}, or " if limit_hint else ""
        raise ProtocolError(f"{what} is {width}x{height} = {width * height} pixels; the limit "
                            f"is {max_pixels} ({lever}send a smaller picture)", status=413)
    note = _frames_note(img)
    try:
        img.seek(0)                          # counting frames may have moved on
        img.load()
    except Exception as err:                 # truncated or corrupt data
        raise ProtocolError(f"{what} could not be decoded ({err}); is the file complete?"
                            ) from err
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:                        # a malformed EXIF block: keep the stored pixels
        note = "; ".join(filter(None, [note, "the EXIF orientation could not be read, so the "
                                              "picture is used as stored"]))
    alpha = _alpha(img)
    return Picture(_convert(img, mode, what), alpha, note)


def _open(data: bytes, what: str, max_pixels: int) -> Image.Image:
    """The opened (header-only) image in an accepted format."""
    if not data:
        raise ProtocolError(f"{what} is empty: send a {SEND} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        raise ProtocolError(f"{what} is too large to decode safely ({err}); send a picture of "
                            f"at most {limit} pixels", status=413) from err
    except UnidentifiedImageError as err:
        raise ProtocolError(f"{what} is not a PNG, JPEG or WebP image, nor BMP, TIFF or GIF "
                            f"(unrecognised content); send a {SEND} file", status=415) from err
    except Exception as err:                 # PIL raises OSError, ValueError, SyntaxError, ...
        raise ProtocolError(f"{what} is not a PNG, JPEG or WebP image, nor BMP, TIFF or GIF "
                            f"({err}); send a {SEND} file", status=415) from err
    if img.format not in FORMATS:
        raise ProtocolError(f"{what} is {img.format}; send {SEND}", status=415)
    return img


def _frames_note(img: Image.Image) -> str | None:
    """What the user should know when a file holds several frames: only the first is used.
    Counting reads frame headers only (no frame is decoded); the caller seeks back to frame 0."""
    kind = "animated" if img.format in ANIMATED else "multi-frame"
    try:
        count = getattr(img, "n_frames", 1)
    except Exception:                        # a damaged later frame: the first still decodes
        return f"{kind} {img.format}: the first frame was used (the others could not be read)"
    if count > 1:
        return f"{kind} {img.format}: the first of {count} frames was used"
    return None


def _alpha(img: Image.Image) -> Image.Image | None:
    """The transparency of a decoded image as an 8-bit "L" image: its alpha channel (RGBA, LA,
    PA), or the transparent palette entries or colour key (P, L, RGB with a transparency
    entry); None for an opaque image."""
    if img.mode in ("RGBA", "LA", "PA"):
        return img.getchannel("A")
    if img.mode in ("RGBa", "La"):           # premultiplied: the alpha band is named "a"
        return img.getchannel("a")
    if "transparency" not in img.info:
        return None
    if img.mode in WIDE:                     # a 16-bit colour key: transparent where equal
        key = np.asarray(img) == img.info["transparency"]
        return Image.fromarray(np.where(key, 0, 255).astype(np.uint8), mode="L")
    try:
        return img.convert("RGBA").getchannel("A")
    except (ValueError, OSError):            # a mode PIL cannot make transparent: opaque
        return None


def _convert(img: Image.Image, mode: str, what: str) -> Image.Image:
    """The 8-bit `mode` image: 16-bit grey scaled (65535 -> 255, rounded), everything else
    converted by PIL (palette, CMYK, 1-bit, grey; alpha dropped, as it is kept apart)."""
    if img.mode in WIDE:
        wide = np.asarray(img).astype(np.int64).clip(0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    try:
        if img.mode == "La":                 # premultiplied grey: no direct conversion
            img = img.convert("LA")
        elif img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")        # as PIL advises for transparent palettes
        return img.convert(mode)
    except (ValueError, OSError) as err:
        raise ProtocolError(f"{what} has PIL pixel mode {img.mode}, which cannot be converted "
                            f"to {mode} ({err}); send an 8-bit RGB or grey picture",
                            status=415) from err


def output_png(t: torch.Tensor, spec: TensorSpec, size: tuple[int, int],
               alpha: Image.Image | None = None, text: dict[str, str] | None = None) -> bytes:
    """One tensor (C, h, w) as PNG bytes at `size` = (width, height), drawn by its kind: a mask
    as grey (which reads back as a mask input), a signed mask as red/blue, an image as itself;
    with the input's `alpha` ("L") as its transparency and `text` chunks when given
    (png_bytes)."""
    draw = {"mask": grey_png, "signed_mask": mask_png, "image": to_png}
    return draw[spec.kind](t, size, alpha, text)


def to_png(t: torch.Tensor, size: tuple[int, int], alpha: Image.Image | None = None,
           text: dict[str, str] | None = None) -> bytes:
    """(3, h, w) (or grey (1, h, w)) in [-1, 1] -> PNG bytes resized to `size` = (width,
    height), with `alpha` as its transparency when given."""
    img = Image.fromarray(pixels.image_array(t)).resize(size, Image.BICUBIC)
    return png_bytes(img, alpha, text)


def mask_png(m: torch.Tensor, size: tuple[int, int], alpha: Image.Image | None = None,
             text: dict[str, str] | None = None) -> bytes:
    """(C, h, w) mask in [-1, 1] -> a diverging picture: red adds, blue removes, white 0."""
    v = m.detach().float().mean(0).clamp(-1, 1).cpu().numpy()          # (h, w)
    pos, neg = np.clip(v, 0, 1)[..., None], np.clip(-v, 0, 1)[..., None]
    white = np.ones(v.shape + (3,))
    rgb = white - pos * np.array([0.0, 0.85, 0.85]) - neg * np.array([0.85, 0.85, 0.0])
    img = Image.fromarray((rgb * 255).round().astype(np.uint8)).resize(size, Image.NEAREST)
    return png_bytes(img, alpha, text)


def grey_png(m: torch.Tensor, size: tuple[int, int], alpha: Image.Image | None = None,
             text: dict[str, str] | None = None) -> bytes:
    """(1, h, w) mask in [0, 1] -> grey PNG (pixel = round(255 m)) at `size` = (width, height)."""
    img = Image.fromarray(pixels.mask_array(m)).resize(size, Image.BILINEAR)
    return png_bytes(img, alpha, text)


def png_bytes(img: Image.Image, alpha: Image.Image | None = None,
              text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of `img`; with `alpha` (any size, read as "L", resized bilinearly to the
    image's size where it differs) an RGBA PNG, or LA for a grey image; `text`: tEXt chunks
    (what made the picture)."""
    if alpha is not None:
        alpha = alpha.convert("L")
        if alpha.size != img.size:
            alpha = alpha.resize(img.size, Image.BILINEAR)
        img = img.convert("L" if img.mode in ("L", "1") else "RGB")    # a copy: putalpha
        img.putalpha(alpha)                                              # changes it in place
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
