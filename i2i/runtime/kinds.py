"""What the runtime derives from tensor kinds (i2i.models.spec), never from names: which input a
mask file or scheme fills, which query parameters are knobs, and the batches that warm up."""

from __future__ import annotations

import functools

import torch

from ..engines import EngineSpec
from ..models import MODELS
from ..models.spec import ModelSpec, TensorSpec
from .protocol import ProtocolError


def mask_input(spec: EngineSpec, required: bool = False) -> TensorSpec | None:
    """The mask input a mask file or a mask scheme fills: the first of any signature of the
    model (one this engine cannot run gives a request the reason); with required=True only one
    that every signature takes. None where there is none."""
    every = list(spec.model_signatures.values())
    masks = [t for s in every for t in s.of_kind("mask")]
    if required:
        masks = [t for t in masks if all(t in s.inputs for s in every)]
    return masks[0] if masks else None


def input_kinds(spec: EngineSpec) -> dict[str, str]:
    """input name -> kind, over every signature of the model."""
    return {t.name: t.kind for s in spec.model_signatures.values() for t in s.inputs}


def knob_inputs(query, spec: EngineSpec) -> dict[str, float]:
    """The query parameters that name a knob of this model, as numbers; ProtocolError for a
    knob of another model, or a value that is not a number (its range is checked with the
    batch)."""
    mine = {t.name for s in spec.model_signatures.values() for t in s.of_kind("knob")}
    theirs = _registry_knobs()
    out = {}
    for key, text in query.items():
        if key not in mine:
            if key in theirs:
                owners = " or ".join(sorted(theirs[key]))
                raise ProtocolError(f"{key} applies to the {owners} model only, not "
                                    f"{spec.model!r}")
            continue
        try:
            out[key] = float(text)
        except ValueError as err:
            raise ProtocolError(f"{key} must be a number, got {text!r}") from err
    return out


@functools.cache
def _registry_knobs() -> dict[str, set[str]]:
    """knob name -> the registered models that take it (with their default configs)."""
    owners: dict[str, set[str]] = {}
    for model, entry in MODELS.items():
        for signature in entry.signatures(entry.config()).values():
            for t in signature.of_kind("knob"):
                owners.setdefault(t.name, set()).add(model)
    return owners


def warm_batch(signature: ModelSpec, n: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A valid batch of n rows for `signature`: zero images, all-ones masks (a mask may have to
    select something), knobs at the low end of their range."""
    out = {}
    for t in signature.inputs:
        shape = (n, t.channels, *size) if t.spatial else (n, *t.shape[1:])
        value = 1.0 if t.kind == "mask" else min(max(0.0, t.range[0]), t.range[1])
        out[t.name] = torch.full(shape, value)
    return out
