"""Models: generators, discriminators, the MODELS registry and the checkpoint contract.

Adding a model = one new file + one line in MODELS. Tests loop over MODELS. An entry names the
model's config dataclass, its builder, its signatures (i2i.models.spec) and, for generators the
reference repositories also train, the layout their `.pth` files use (i2i.models.reference).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .additive import AdditiveConfig, AdditiveTranslator, additive_signatures
from .checkpoint import CheckpointError, read_checkpoint, read_document, save_checkpoint
from .cut import CUTConfig, CUTTranslator, cut_signatures
from .cyclegan import CycleGANConfig, CycleGANTranslator, cyclegan_signatures
from .lomit import LomitConfig, LomitTranslator, lomit_signatures
from .maskcyclegan import MaskCycleGANConfig, MaskCycleGANTranslator, maskcyclegan_signatures
from .pix2pix import Pix2PixConfig, Pix2PixTranslator, pix2pix_signatures
from .spec import InputError, ModelSpec, TensorSpec
from .unit import UnitConfig, UnitTranslator, unit_signatures


@dataclass(frozen=True)
class ModelEntry:
    config: type                                   # frozen dataclass of architecture settings
    build: Callable[[Any], nn.Module]              # config -> inference module
    signatures: Callable[[Any], dict[str, ModelSpec]]   # config -> {"default": ..., ...}
    reference: str | None = None                   # layout of reference .pth generators

    def spec(self, config: Any) -> ModelSpec:
        """The `default` signature."""
        return self.signatures(config)["default"]


MODELS: dict[str, ModelEntry] = {
    "additive": ModelEntry(AdditiveConfig, AdditiveTranslator, additive_signatures, "resnet"),
    "cyclegan": ModelEntry(CycleGANConfig, CycleGANTranslator, cyclegan_signatures, "resnet"),
    "cut": ModelEntry(CUTConfig, CUTTranslator, cut_signatures),
    "lomit": ModelEntry(LomitConfig, LomitTranslator, lomit_signatures),
    "maskcyclegan": ModelEntry(MaskCycleGANConfig, MaskCycleGANTranslator,
                               maskcyclegan_signatures, "maskcyclegan"),
    "pix2pix": ModelEntry(Pix2PixConfig, Pix2PixTranslator, pix2pix_signatures, "unet"),
    "unit": ModelEntry(UnitConfig, UnitTranslator, unit_signatures),
}


class UnknownModelError(ValueError):
    pass


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint}; known: {', '.join(MODELS)}")
    return MODELS[name]


def make_config(name: str, values: dict | None = None) -> Any:
    """The model's config dataclass from a dict; unknown fields are an error, not ignored."""
    entry = get_entry(name)
    values = dict(values or {})
    known = {f.name for f in fields(entry.config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckpointError(f"config fields {unknown} are unknown to model {name!r} "
                              f"(known: {sorted(known)}); was it written by a newer i2i?")
    return entry.config(**values)


def build(name: str, config: Any = None) -> nn.Module:
    entry = get_entry(name)
    return entry.build(config if config is not None else entry.config())


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """The eval-mode inference module and its `default` signature, rebuilt from the checkpoint
    alone (signatures(module) gives them all)."""
    state, document = read_checkpoint(path, device)
    name = document.get("model", "")
    try:
        entry = get_entry(name)
    except UnknownModelError as err:
        raise CheckpointError(f"{path}: {err}") from err
    config = make_config(name, document.get("config"))
    module = entry.build(config)
    load_state(module, state, source=str(path))
    return module.to(device).eval(), entry.spec(config)


def signatures(module: nn.Module) -> dict[str, ModelSpec]:
    """Every signature of a module built from the registry (it keeps its config)."""
    return entry_of(module).signatures(module.config)


def entry_of(module: nn.Module) -> ModelEntry:
    """The registry entry whose builder made `module`."""
    for entry in MODELS.values():
        if type(module) is entry.build:
            return entry
    raise UnknownModelError(f"{type(module).__name__} is not a model of the registry; known: "
                            f"{', '.join(MODELS)}")


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with an error that lists every key problem."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append("shape mismatches " + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                for k in shapes))
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: "
                              + "; ".join(parts))
    module.load_state_dict(state, strict=True)


__all__ = ["MODELS", "ModelEntry", "ModelSpec", "TensorSpec", "CheckpointError", "InputError",
           "entry_of", "signatures",
           "UnknownModelError", "get_entry", "make_config", "build", "load", "load_state",
           "save_checkpoint", "read_checkpoint", "read_document"]
