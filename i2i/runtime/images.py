"""Pictures in and out of the runtime: decoding uploads safely, resizing to the model and back.

Decoding checks the format and the pixel count from the file header BEFORE decoding, so a
decompression bomb is refused without allocating it. Outputs are PNG at the input's size.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .. import pixels
from ..data.masks import MaskSampler
from ..models.spec import TensorSpec
from .protocol import ProtocolError

FORMATS = {"PNG", "JPEG", "WEBP"}
DEFAULT_MAX_PIXELS = 4096 * 4096


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
           mode: str = "RGB") -> Image.Image:
    """`mode` ("RGB", or "L" for masks) image from PNG/JPEG/WebP bytes; ProtocolError
    (400/413/415) for anything else."""
    if not data:
        raise ProtocolError(f"{what} is empty: send a PNG, JPEG or WebP file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombWarning as err:
        raise ProtocolError(f"{what} is too large: {err}", status=413) from err
    except UnidentifiedImageError as err:
        raise ProtocolError(f"{what} is not a PNG, JPEG or WebP image (unrecognised content)",
                            status=415) from err
    except Exception as err:                 # PIL raises OSError, ValueError, ...
        raise ProtocolError(f"{what} is not a PNG, JPEG or WebP image ({err})",
                            status=415) from err
    if img.format not in FORMATS:
        raise ProtocolError(f"{what} is {img.format}; send PNG, JPEG or WebP", status=415)
    width, height = img.size
    if width * height > max_pixels:
        raise ProtocolError(f"{what} is {width}x{height} = {width * height} pixels; the limit "
                            f"is {max_pixels}", status=413)
    try:
        img.load()
    except Exception as err:                 # truncated or corrupt data
        raise ProtocolError(f"{what} could not be decoded ({err}); is the file complete?"
                            ) from err
    return img.convert(mode)


def to_tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] at the model's size (bicubic, as the reference tests)."""
    return pixels.image_tensor(img.resize((size[1], size[0]), Image.BICUBIC))


def to_mask(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1] from a grey image (pixel / 255) at the model's size."""
    return pixels.mask_tensor(img.convert("L").resize((size[1], size[0]), Image.BILINEAR))


def drawn_mask(sampler: MaskSampler, picture: tuple[int, int], size: tuple[int, int],
               seed: int, label: str = "mask") -> torch.Tensor:
    """(1, 1, H, W) {0, 1} mask at the model's size (H, W) = size, drawn by a mask scheme
    (i2i.data.masks) on the picture's own pixels, `picture` = (width, height), so `center` is the
    picture's centered square, then scaled with nearest neighbours so it stays binary.
    ProtocolError, starting with `label`, where the scheme cannot mask this picture (center on
    a non-square one)."""
    width, height = picture
    try:
        mask = sampler.sample(1, height, width, generator=seed)              # (1, 1, h, w)
    except ValueError as err:
        raise ProtocolError(f"{label}: {err}") from err
    if (height, width) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="nearest-exact")


def output_png(t: torch.Tensor, spec: TensorSpec, size: tuple[int, int]) -> bytes:
    """One tensor (C, h, w) as PNG bytes at `size` = (width, height), drawn by its kind: a mask
    as grey (which reads back as a mask input), a signed mask as red/blue, an image as itself."""
    draw = {"mask": grey_png, "signed_mask": mask_png, "image": to_png}
    return draw[spec.kind](t, size)


def to_png(t: torch.Tensor, size: tuple[int, int]) -> bytes:
    """(3, h, w) in [-1, 1] -> PNG bytes resized to `size` = (width, height)."""
    return png_bytes(Image.fromarray(pixels.image_array(t)).resize(size, Image.BICUBIC))


def mask_png(m: torch.Tensor, size: tuple[int, int]) -> bytes:
    """(C, h, w) mask in [-1, 1] -> a diverging picture: red adds, blue removes, white 0."""
    v = m.detach().float().mean(0).clamp(-1, 1).cpu().numpy()          # (h, w)
    pos, neg = np.clip(v, 0, 1)[..., None], np.clip(-v, 0, 1)[..., None]
    white = np.ones(v.shape + (3,))
    rgb = white - pos * np.array([0.0, 0.85, 0.85]) - neg * np.array([0.85, 0.85, 0.0])
    img = Image.fromarray((rgb * 255).round().astype(np.uint8)).resize(size, Image.NEAREST)
    return png_bytes(img)


def grey_png(m: torch.Tensor, size: tuple[int, int]) -> bytes:
    """(1, h, w) mask in [0, 1] -> grey PNG (pixel = round(255 m)) at `size` = (width, height)."""
    return png_bytes(Image.fromarray(pixels.mask_array(m)).resize(size, Image.BILINEAR))


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
