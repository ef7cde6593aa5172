"""What a model takes and gives: named tensors with kinds, grouped into signatures.

A model declares one or more **signatures** (`ModelSpec`), each bound to a method of its module:
most models have one, `default` (forward); LOMIT also has `masked` (a user mask in place of its
own), the additive model `strength` (the mask scale as a per-row input). Export, the manifest,
the Triton repository, engines and serving loop over signatures alike; an engine picks the one
whose input names are exactly those a request carries.

Every tensor has a **kind**, which is all the runtime needs to know about it (it never compares
model or tensor names):

    image        (N, C, H, W) picture in [-1, 1]
    mask         (N, 1, H, W) in [0, 1]: 1 = this pixel is selected (grey pictures, 255 = 1)
    signed_mask  (N, C, H, W) in [-1, 1]: a change added to an image (drawn red/blue)
    knob         (N, 1) one number per row in `range` (e.g. the additive mask strength)

An output may be drawn over another input's pixels than the first image's (`over`); a mask
input may be required to select at least one pixel in every row (`nonempty`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

KINDS = ("image", "mask", "signed_mask", "knob")
SPATIAL = ("image", "mask", "signed_mask")


class InputError(ValueError):
    """A batch that does not fit a signature; the HTTP layer answers it with a 400."""

    status = 400


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor. -1 marks a dynamic dimension (batch, and H/W where allowed)."""

    name: str
    shape: tuple[int, ...]          # e.g. (-1, 3, -1, -1) for NCHW with dynamic N, H, W
    dtype: str = "float32"
    range: tuple[float, float] = (-1.0, 1.0)
    kind: str = "image"
    over: str | None = None         # output drawn over this input's pixels (None: the image's)
    nonempty: bool = False          # mask input: every row must select at least one pixel

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tensor {self.name!r} has kind {self.kind!r}; known: "
                             f"{', '.join(KINDS)}")

    @property
    def spatial(self) -> bool:
        """(N, C, H, W), sharing H and W with the signature's other spatial tensors."""
        return self.kind in SPATIAL

    @property
    def channels(self) -> int:
        return self.shape[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> TensorSpec:
        return cls(entry["name"], tuple(entry["shape"]), entry.get("dtype", "float32"),
                   tuple(entry.get("range", (-1.0, 1.0))), entry.get("kind", "image"),
                   entry.get("over"), bool(entry.get("nonempty", False)))


@dataclass(frozen=True)
class Composite:
    """How a signature's picture output is its image input changed through a mask, which lets
    the `mask` resolution policy (i2i.runtime.resolution) compute the mask at a working size
    and apply it to the full-resolution picture:

        add     output = clamp(image + change)            the change the model added, upsampled
        blend   output = image * (1 - m) + output' * m    m: the mask (an input or an output)
    """

    output: str                     # the translated picture, e.g. "translation"
    mask: str                       # the mask tensor it follows (input or output)
    rule: str                       # "add" | "blend"

    def __post_init__(self) -> None:
        if self.rule not in ("add", "blend"):
            raise ValueError(f"composite rule {self.rule!r}; known: add, blend")


@dataclass(frozen=True)
class ModelSpec:
    """One signature: the module method it calls, its inputs and outputs in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_multiple: int              # H and W must be multiples of this
    channels: int = 3
    method: str = "forward"
    composite: Composite | None = None  # None: the output is not a masked change of the input
    min_size: int = 0               # the smallest H and W it takes, where above size_multiple
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(t.name for t in self.inputs))
        given = [t.name for t in (*self.inputs, *self.outputs)]
        if self.composite is not None:
            c = self.composite
            if c.output not in {t.name for t in self.outputs} or c.mask not in given:
                raise ValueError(f"composite of {self.method}() names {c.output!r} and "
                                 f"{c.mask!r}; they must be an output and a tensor of it")
        repeated = sorted({n for n in given if given.count(n) > 1})
        if repeated:
            raise ValueError(f"signature of {self.method}() names {repeated} more than once; "
                             "inputs and outputs need names of their own (ONNX and Triton "
                             "cannot tell them apart)")

    def to_dict(self) -> dict:
        return {"method": self.method, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "composite": asdict(self.composite) if self.composite else None,
                "min_size": self.min_size}

    def of_kind(self, kind: str) -> tuple[TensorSpec, ...]:
        return tuple(t for t in self.inputs if t.kind == kind)

    @property
    def image(self) -> TensorSpec:
        """The first image input: the picture a request translates."""
        return self.of_kind("image")[0]

    @property
    def smallest(self) -> int:
        """The smallest height and width the architecture takes."""
        return max(self.size_multiple, self.min_size)

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The smallest H x W at or above `height` x `width` the architecture takes: the one
        size rule (check_size, the engines' batch check and the native policy follow it)."""
        m = self.size_multiple
        return (max(-(-height // m) * m, self.smallest), max(-(-width // m) * m, self.smallest))

    def check_size(self, height: int, width: int) -> None:
        """Raise InputError when the architecture cannot take an H x W image."""
        fit = self.padded(height, width)
        if fit != (height, width):
            raise InputError(
                f"image size {height}x{width} is not supported: height and width must be "
                f"multiples of {self.size_multiple}, at least {self.smallest}, for this model "
                f"(try {fit[0]}x{fit[1]})")


def image_spec(name: str, channels: int = 3, over: str | None = None) -> TensorSpec:
    return TensorSpec(name, (-1, channels, -1, -1), over=over)


def mask_spec(name: str, over: str | None = None, nonempty: bool = False) -> TensorSpec:
    return TensorSpec(name, (-1, 1, -1, -1), range=(0.0, 1.0), kind="mask", over=over,
                      nonempty=nonempty)


def signed_mask_spec(name: str, channels: int = 3) -> TensorSpec:
    return TensorSpec(name, (-1, channels, -1, -1), kind="signed_mask")


def knob_spec(name: str, low: float, high: float) -> TensorSpec:
    return TensorSpec(name, (-1, 1), range=(low, high), kind="knob")


def signatures_from_dict(entries: dict[str, dict], size_multiple: int
                         ) -> dict[str, ModelSpec]:
    """The signatures a manifest records, rebuilt (channels from the first image input)."""
    out = {}
    for name, entry in entries.items():
        inputs = tuple(TensorSpec.from_dict(t) for t in entry["inputs"])
        outputs = tuple(TensorSpec.from_dict(t) for t in entry["outputs"])
        channels = next((t.channels for t in inputs if t.kind == "image"), 3)
        composite = Composite(**entry["composite"]) if entry.get("composite") else None
        out[name] = ModelSpec(inputs, outputs, size_multiple, channels, entry["method"],
                              composite, int(entry.get("min_size", 0)))
    return out
