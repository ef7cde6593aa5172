"""Named input/output descriptions shared by every model, export and the runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor. -1 marks a dynamic dimension (batch, and H/W where allowed)."""

    name: str
    shape: tuple[int, ...]          # e.g. (-1, 3, -1, -1) for NCHW with dynamic N, H, W
    dtype: str = "float32"
    range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_multiple: int              # H and W must be multiples of this
    channels: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError when the architecture cannot take an H x W image."""
        m = self.size_multiple
        if height % m or width % m or height < m or width < m:
            raise ValueError(
                f"image size {height}x{width} is not supported: height and width must be "
                f"positive multiples of {m} for this model (try {_round_up(height, m)}x"
                f"{_round_up(width, m)})")


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def image_spec(name: str, channels: int = 3) -> TensorSpec:
    return TensorSpec(name, (-1, channels, -1, -1))
