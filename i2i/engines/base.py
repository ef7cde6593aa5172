"""What every engine shares: its spec, the Engine protocol and the one batch check.

    engine.spec.signatures      {"default": ModelSpec, ...}: what this engine can run
    engine.run(batch)           {input name: tensor} -> {output name: float32 CPU tensor}

A batch's input names pick the signature (exactly one signature takes exactly those names);
check_batch is the only place a batch is validated, for every engine and for the server before
a request is queued. Its errors are InputError (a ValueError; HTTP answers them with 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..models.spec import InputError, ModelSpec, TensorSpec

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class EngineSpec:
    model: str                                  # registry name, e.g. "additive"
    signatures: dict[str, ModelSpec]            # the signatures this engine runs
    max_batch_size: int                         # the most rows one run() takes
    size: tuple[int, int] | None                # fixed (H, W) for AOTI/TensorRT, else None
    size_multiple: int                          # H and W must be multiples of this
    default_size: tuple[int, int]               # training/export size
    precision: str                              # "fp32" | "fp16" | "bf16" | "int8"
    device: str                                 # "cpu" | "cuda:0"
    source: str = ""                            # sha256 of the checkpoint the weights came from
    direction: str | None = None                # AtoB | BtoA, as the checkpoint records it
    # The model's signatures this engine cannot run, and why not.
    unavailable: dict[str, ModelSpec] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    # How the engine was chosen where the caller asked for engine "auto" (i2i.engines.choice).
    choice: str = ""

    @property
    def model_signatures(self) -> dict[str, ModelSpec]:
        """Every signature of the model: those this engine runs, then the others."""
        return {**self.signatures, **self.unavailable}

    @property
    def default(self) -> ModelSpec:
        return self.signatures.get("default") or next(iter(self.signatures.values()))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.default.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.default.outputs

    def signature(self, batch: object) -> str:
        """The signature whose inputs are exactly the batch's names; InputError if none is."""
        given = set(batch) if isinstance(batch, Mapping) else None
        for label, signature in self.signatures.items():
            if given == set(signature.names):
                return label
        for label, signature in self.unavailable.items():
            if given == set(signature.names):
                raise InputError(f"inputs {sorted(given)} are those of the signature "
                                 f"{label!r}: {self.reasons[label]}")
        shown = sorted(given) if given is not None else type(batch).__name__
        known = {n for s in self.model_signatures.values() for n in s.names}
        unknown = sorted(set(given or ()) - known)
        missing = [sorted(set(s.names) - given) for s in self.model_signatures.values()
                   if given is not None and given < set(s.names)]
        if unknown:
            lead = f"unknown input {unknown[0]!r}; "
        elif missing:
            lead = f"missing input(s) {min(missing, key=len)}; "
        else:
            lead = ""
        others = [f"{label} {list(s.names)}" for label, s in self.signatures.items()
                  if s is not self.default]
        also = f"signatures besides the default: {'; '.join(others)}; " if others else ""
        raise InputError(f"{lead}{also}inputs {shown} do not match the engine's inputs "
                         f"{list(self.default.names)}")


class Engine(Protocol):
    name: str
    spec: EngineSpec

    def run(self, batch: Batch) -> dict[str, torch.Tensor]: ...


def check_batch(spec: EngineSpec, batch: Batch, sizes: bool = True) -> int:
    """The row count N of a batch that fits one of `spec`'s signatures (spec.signature(batch)
    names it); InputError saying what to change otherwise: names, rank, dtype, channels, size,
    rows, and the values of masks and knobs. sizes=False: any H x W the inputs share (a
    picture before a resolution policy brings it to sizes the engine takes)."""
    signature = spec.signatures[spec.signature(batch)]
    rows, spatial = set(), {}
    for t in signature.inputs:
        x = batch[t.name]
        rows.add(_check_tensor(t, x))
        if t.spatial:
            spatial.setdefault((int(x.shape[2]), int(x.shape[3])), t.name)
    shapes = ", ".join(f"{t.name!r} is {list(batch[t.name].shape)}" for t in signature.inputs)
    if len(rows) != 1:
        raise InputError(f"inputs have different batch sizes {sorted(rows)} ({shapes}); give "
                         "every input the same number of rows")
    if len(spatial) > 1:
        raise InputError(f"inputs have different sizes {sorted(spatial)} ({shapes}); give "
                         "every input the image's height and width")
    if sizes and spatial:
        (size, name), = spatial.items()
        _check_size(spec, signature, name, size)
    n = rows.pop()
    if not 1 <= n <= spec.max_batch_size:
        raise InputError(f"batch of {n} rows; this engine takes 1 to {spec.max_batch_size} "
                         "rows per run (split the batch)")
    for t in signature.inputs:                  # every value in its kind's range
        _check_values(t, batch[t.name])
    return n


def _check_tensor(t: TensorSpec, x: object) -> int:
    rank = len(t.shape)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"input {t.name!r} must be a tensor, got {type(x).__name__}")
    expected = f"input {t.name!r} has shape {list(x.shape)}; expected {list(t.shape)} (-1: any)"
    if x.dim() != rank:
        layout = "(N, C, H, W)" if t.spatial else f"({', '.join(['N', *'1' * (rank - 1)])})"
        raise InputError(f"{expected}: it must be an {layout} tensor")
    if not x.is_floating_point():
        raise InputError(f"input {t.name!r} is {x.dtype}; engines take float32 in [-1, 1] "
                         "(for uint8 pixels: i2i.pixels.from_uint8)")
    if t.shape[1] > 0 and x.shape[1] != t.shape[1]:
        hint = " (convert grey or RGBA images to RGB first)" if t.kind == "image" else ""
        raise InputError(f"{expected}: it has {x.shape[1]} channels; the model takes "
                         f"{t.shape[1]}{hint}")
    return int(x.shape[0])


def _check_size(spec: EngineSpec, signature: ModelSpec, name: str, size: tuple[int, int]
                ) -> None:
    h, w = size
    if spec.size is not None and (h, w) != spec.size:
        raise InputError(f"input {name!r} is {h}x{w}; this {spec.device} engine takes only "
                         f"{spec.size[0]}x{spec.size[1]} images (fixed at export): resize, or "
                         "re-export with --size, or use the onnxruntime engine")
    fit = signature.padded(h, w)
    if fit != (h, w):
        raise InputError(f"input {name!r} is {h}x{w}; height and width must be multiples "
                         f"of {signature.size_multiple} (at least {signature.smallest}; pad or "
                         f"resize to {fit[0]}x{fit[1]})")


def _check_values(t: TensorSpec, x: torch.Tensor) -> None:
    lo, hi = t.range
    if not bool(((x >= lo) & (x <= hi)).all()):         # NaN fails both comparisons
        raise InputError(f"input {t.name!r} must lie in [{lo:g}, {hi:g}]; it holds values "
                         f"from {x.min().item():g} to {x.max().item():g}")
    if t.nonempty:
        empty = (x.flatten(1).amax(dim=1) <= 0).nonzero().flatten().tolist()
        if empty:
            raise InputError(f"input {t.name!r} selects no pixel in row(s) {empty}: an empty "
                             "mask has no defined translation (the output would be numerical "
                             "noise); mark at least one pixel, or keep the image as it is")


def to_host(out: torch.Tensor) -> torch.Tensor:
    return out.to("cpu", torch.float32).contiguous()


def check_shared_dims(inputs: dict[str, torch.Tensor], where: object) -> None:
    """ValueError unless every input has the same N and every (N, C, H, W) input the same H
    and W: graphs and packages are exported with one batch, height and width dimension."""
    shapes = {name: tuple(x.shape) for name, x in inputs.items()}
    batches = {s[0] for s in shapes.values()}
    sizes = {s[2:] for s in shapes.values() if len(s) == 4}
    if len(batches) > 1 or len(sizes) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise InputError(f"{where} takes inputs that share batch, height and width; got "
                         f"{listed}: resize or pad them to one (N, H, W)")
