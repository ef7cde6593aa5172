"""The training recipes by name: RECIPES is the one table the loop and i2i-train read.

An entry says which objective trains which model (an i2i.models name), what data it needs
(pairs: the pix2pix folder layout; labels: input/exemplar pairs with attribute labels), whether
--supervised selects it, its defaults for the options left unset, the options only it takes,
its switches (on/off flags of its own, each a --NAME of i2i-train with its help) and how it
makes the model's config from the options. The size rule comes from that config's
spec (i2i.models), so the loop and the command line never ask which model they train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import get_entry
from .additive import AdditiveRecipe, AdditiveSupervisedRecipe, additive_config
from .cut import CUTRecipe, cut_config
from .cyclegan import CycleGANRecipe, cyclegan_config
from .init import init_networks
from .lomit import LomitRecipe, lomit_config
from .maskcyclegan import MaskCycleGANRecipe, maskcyclegan_config
from .pix2pix import Pix2PixRecipe, pix2pix_config
from .recipe import Recipe, RecipeOptions
from .unit import UnitRecipe, unit_config

# Options left at None take the recipe's value; these hold unless an entry says otherwise.
COMMON_DEFAULTS: Mapping[str, Any] = {"batch_size": 16, "lr": 2e-4, "n_blocks": 9,
                                      "disc_layers": 3}
# The reference code's initialisation (train/init.py), for the recipes whose reference has one.
REFERENCE_INIT: Mapping[str, Any] = {"init_type": "normal", "init_gain": 0.02}
INIT = frozenset({"init_type", "init_gain"})


def _defaults(**overrides: Any) -> dict[str, Any]:
    return {**COMMON_DEFAULTS, **overrides}


@dataclass(frozen=True)
class RecipeEntry:
    recipe: type[Recipe]                            # the objective; recipe.build(config, options)
    model: str                                      # the i2i.models name of what it trains
    config: Callable[[RecipeOptions], Any]          # options -> that model's config
    pairs: bool = False                             # A[i] and B[i] correspond
    labels: bool = False                            # batches carry "label_A"/"label_B"
    supervised: bool = False                        # chosen by --supervised
    defaults: Mapping[str, Any] = field(default_factory=_defaults)   # for options left at None
    options: frozenset[str] = frozenset()           # TrainOptions fields only some recipes take
    switches: Mapping[str, str] = field(default_factory=dict)   # name -> what --NAME turns on

    def make(self, o: RecipeOptions) -> tuple[Recipe, Any]:
        """(recipe, model config) for these options, its networks initialised as o says."""
        config = self.config(o)
        recipe = self.recipe.build(config, o)
        init_networks(recipe.nets, o.init_type, o.init_gain, o.seed)
        return recipe, config

    def size_multiple(self, o: RecipeOptions) -> int:
        """H and W of training images must be multiples of this, as the model's spec says."""
        return get_entry(self.model).spec(self.config(o)).size_multiple


RECIPES: dict[str, RecipeEntry] = {
    # The paper's lambda_r: 1.0 against a GAN, 0.01 against paired L1 targets. Its paper names
    # no initialisation: PyTorch's default, which its committed figures were measured with.
    "additive": RecipeEntry(AdditiveRecipe, "additive", additive_config,
                            defaults=_defaults(lambda_r=1.0, lambda_cycle=10.0, pool_size=50,
                                               init_type="default", init_gain=0.02),
                            options=INIT | {"lambda_r", "lambda_cycle", "pool_size"}),
    "additive_supervised": RecipeEntry(AdditiveSupervisedRecipe, "additive", additive_config,
                                       pairs=True, supervised=True,
                                       defaults=_defaults(lambda_r=0.01, init_type="default",
                                                          init_gain=0.02),
                                       options=INIT | {"lambda_r"}),
    # The CycleGAN/pix2pix reference defaults: lsgan with cycle 10, identity 0.5, pool 50 for
    # CycleGAN; vanilla GAN with L1 100, batch 1 for pix2pix (its BatchNorm trains per image).
    "cyclegan": RecipeEntry(CycleGANRecipe, "cyclegan", cyclegan_config,
                            defaults=_defaults(gan_mode="lsgan", lambda_cycle=10.0,
                                               lambda_identity=0.5, pool_size=50,
                                               **REFERENCE_INIT),
                            options=INIT | {"gan_mode", "lambda_cycle", "lambda_identity",
                                            "pool_size"}),
    "pix2pix": RecipeEntry(Pix2PixRecipe, "pix2pix", pix2pix_config, pairs=True,
                           defaults=_defaults(batch_size=1, gan_mode="vanilla", lambda_l1=100.0,
                                              **REFERENCE_INIT),
                           options=INIT | {"gan_mode", "lambda_l1"}),
    # The CUT code's xavier-normal gain 0.02 initialisation; --fastcut picks FastCUT.
    "cut": RecipeEntry(CUTRecipe, "cut", cut_config,
                       defaults=_defaults(init_type="xavier", init_gain=0.02), options=INIT,
                       switches={"fastcut": "train FastCUT (PatchNCE x 10, no identity PatchNCE, "
                                            "flip equivariance) instead of CUT"}),
    # LOMIT's paper: Adam 1e-4, batch 8, 4 residual blocks in the content encoder and decoder;
    # its own initialisation (He / N(0, 0.02), train/lomit.py), so no --init-type.
    "lomit": RecipeEntry(LomitRecipe, "lomit", lomit_config, labels=True,
                         defaults=_defaults(batch_size=8, lr=1e-4, n_blocks=4, follow="paper"),
                         options=frozenset({"follow"})),
    "maskcyclegan": RecipeEntry(MaskCycleGANRecipe, "maskcyclegan", maskcyclegan_config,
                                defaults=_defaults(follow="paper", lambda_cycle=10.0,
                                                   pool_size=50, **REFERENCE_INIT),
                                options=INIT | {"masks", "follow", "lambda_cycle",
                                                "pool_size"}),
    # UNIT's public code (configs/unit_*.yaml): Adam 1e-4, 4 residual blocks per encoder and
    # decoder, 4 layers per discriminator scale; its networks share no weights (follow code).
    "unit": RecipeEntry(UnitRecipe, "unit", unit_config,
                        defaults=_defaults(lr=1e-4, n_blocks=4, disc_layers=4, follow="code"),
                        options=frozenset({"follow"})),
}
DEFAULT_MODEL = RECIPES["additive"].model


def trained_models() -> list[str]:
    """The models some recipe trains, in RECIPES order."""
    return _models(lambda entry: True)


def recipe_entry(model: str, supervised: bool = False) -> RecipeEntry:
    """The entry training `model` (its supervised variant when `supervised`); ValueError, saying
    what exists, otherwise."""
    for entry in RECIPES.values():
        if entry.model == model and entry.supervised == supervised:
            return entry
    get_entry(model)                        # raises the "unknown model ..." error
    if supervised:
        takers = _listed(_models(lambda entry: entry.supervised))
        raise ValueError(f"--supervised applies to the {takers} model only, not {model!r}")
    raise ValueError(f"model {model!r} has no training recipe yet; recipes train "
                     f"{', '.join(trained_models())}")


def check_options(entry: RecipeEntry, values: object) -> None:
    """ValueError when `values` (TrainOptions) sets an option or a switch that only other
    recipes take, or a switch no recipe has."""
    for option in sorted(set().union(*(e.options for e in RECIPES.values()))):
        if getattr(values, option) is not None and option not in entry.options:
            takers = _listed(_models(lambda e, option=option: option in e.options))
            raise ValueError(f"--{option.replace('_', '-')} applies to {takers} only, "
                             f"not {entry.model!r}")
    for name in sorted(values.switches):
        if name in entry.switches:
            continue
        takers = _models(lambda e, name=name: name in e.switches)
        if not takers:
            known = ", ".join(f"--{flag(s)}" for s in switch_help()) or "none"
            raise ValueError(f"--{flag(name)} is no recipe's switch; the switches: {known}")
        raise ValueError(f"--{flag(name)} applies to {_listed(takers)} only, "
                         f"not {entry.model!r}")


def takers(option: str) -> str:
    """The models whose recipes take an option ('a, b and c'), for help texts."""
    return _listed(_models(lambda e: option in e.options))


def models_with(kind: str) -> str:
    """The models with a recipe of that kind (pairs, labels or supervised), for help texts; a
    supervised recipe is named 'model --supervised'."""
    names = [f"{e.model} --supervised" if e.supervised and kind != "supervised" else e.model
             for e in RECIPES.values() if getattr(e, kind)]
    return _listed(list(dict.fromkeys(names)))


def default_text(option: str) -> str:
    """The recipes' defaults of an option, for help texts: the most common value first, then
    the others with the recipes that have them ('9; lomit and unit: 4'). Only the recipes that
    take an option some others lack are counted."""
    special = set().union(*(e.options for e in RECIPES.values()))
    entries = [e for e in RECIPES.values()
               if option in e.defaults and (option not in special or option in e.options)]
    groups: dict[str, list[str]] = {}
    for entry in entries:
        value = entry.defaults[option]
        split = any(e.model == entry.model and e.defaults[option] != value for e in entries)
        label = f"{entry.model} --supervised" if split and entry.supervised else entry.model
        groups.setdefault(_shown(value), []).append(label)
    if not groups:
        return "none"
    ranked = sorted(groups.items(), key=lambda group: -len(group[1]))   # stable: RECIPES order
    first, *others = ranked
    return "; ".join([first[0], *(f"{_listed(list(dict.fromkeys(labels)))}: {value}"
                                  for value, labels in others)])


def _shown(value: Any) -> str:
    """2e-4, 0.5, 10, lsgan: numbers as their flags are written."""
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return f"{value:g}" if isinstance(value, float) else str(value)


def switch_help() -> dict[str, str]:
    """Every recipe switch by name, with its help: '<the models that take it>: <its words>'."""
    words: dict[str, str] = {}
    for entry in RECIPES.values():
        for name, said in entry.switches.items():
            words.setdefault(name, said)
    return {name: f"{_listed(_models(lambda e, name=name: name in e.switches))}: {said}"
            for name, said in words.items()}


def flag(name: str) -> str:
    """The command-line spelling of an option or switch name: lambda_r -> lambda-r."""
    return name.replace("_", "-")


def _models(keep: Callable[[RecipeEntry], bool]) -> list[str]:
    return list(dict.fromkeys(entry.model for entry in RECIPES.values() if keep(entry)))


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'; 'none' for no names."""
    if not names:
        return "none"
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
