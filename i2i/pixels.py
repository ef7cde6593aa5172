"""Pixels <-> tensors: the one place that knows how 8-bit pictures map to model tensors.

An image tensor is (C, H, W) float32 in [-1, 1]: value = pixel / 127.5 - 1, and back
pixel = round((value + 1) * 127.5) after clamping to [-1, 1]. A mask tensor is (1, H, W) in
[0, 1]: value = grey / 255, and back grey = round(255 * value).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) -> float32 in [-1, 1], contiguous (crops and flips are views)."""
    return (x.float() / 127.5 - 1.0).contiguous()


def to_uint8(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [-1, 1] -> uint8 (C, H, W) on the CPU; values outside are clamped."""
    return ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_tensor(img: Image.Image, channels: int = 3) -> torch.Tensor:
    """(channels, H, W) float32 in [-1, 1] from a PIL image: 3 channels converted to RGB, 1
    channel converted to grey (PIL's "L": 0.299 R + 0.587 G + 0.114 B), for a model with one
    input channel."""
    if channels not in (1, 3):
        raise ValueError(f"image_tensor makes 1 (grey) or 3 (RGB) channels, not {channels}; "
                         "pass channels=1 or channels=3")
    array = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)  # a copy
    if channels == 1:
        return from_uint8(torch.from_numpy(array)[None])
    return from_uint8(torch.from_numpy(array).permute(2, 0, 1))


def image_array(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8 array; a grey (1, H, W) one -> (H, W)."""
    if t.dim() == 3 and t.shape[0] == 1:
        return to_uint8(t)[0].numpy()
    return to_uint8(t).permute(1, 2, 0).numpy()


def to_image(t: torch.Tensor) -> Image.Image:
    """A PIL RGB image from one (3, H, W) tensor in [-1, 1], a grey ("L") one from (1, H, W)."""
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"to_image expects one (3, H, W) image, or (1, H, W) grey, got shape "
                         f"{tuple(t.shape)}; index a batch first (to_image(batch[i]))")
    return Image.fromarray(image_array(t), mode="L" if t.shape[0] == 1 else "RGB")


def mask_tensor(img: Image.Image) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1] from a grey picture: grey / 255."""
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255)[None]


def mask_array(m: torch.Tensor) -> np.ndarray:
    """(1, H, W) in [0, 1] -> (H, W) uint8 grey: round(255 m), clamped."""
    return (m.detach().float().cpu()[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
