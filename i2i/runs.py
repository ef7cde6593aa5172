"""The files a training run writes at each checkpoint step, named in one place so that
training, its recovery and export read the same names.

    checkpoints/step_XXXXXX.safetensors        the run's translator (A -> B): "AtoB"
    checkpoints/step_XXXXXX.BtoA.safetensors   its B -> A generator, for recipes that train
                                               one of the same model (cycle recipes): "BtoA"
    checkpoints/step_XXXXXX.train.safetensors  the training state: "state"

Both generators are ordinary i2i checkpoints whose meta["direction"] says which way each
translates; a file name is only where to look, the meta is what a reader trusts.
"""

from __future__ import annotations

import re
from pathlib import Path

DIRECTIONS = ("AtoB", "BtoA")
KINDS = ("AtoB", "BtoA", "state")
_SUFFIX = {"AtoB": ".safetensors", "BtoA": ".BtoA.safetensors", "state": ".train.safetensors"}
_NAME = re.compile(r"step_(\d+)(\.BtoA|\.train)?\.safetensors")
_KIND = {None: "AtoB", ".BtoA": "BtoA", ".train": "state"}

# A recipe that trains no B -> A generator says why in its checkpoints' meta["one_way"]
# (Recipe.one_way). Checkpoints written before meta carried it fall back on this table, by
# (model, supervised) as they record them; it is closed: a recipe added since writes its own.
# tests/test_train_btoa.py checks it against the recipes.
ONE_WAY_BEFORE_META = {
    ("pix2pix", False): "pix2pix trains one generator, on aligned A -> B pairs; "
                        "`i2i-train --model pix2pix --direction BtoA` trains one the other way",
    ("additive", True): "the supervised additive recipe fits one generator to aligned A -> B "
                        "pairs, with no cycle and so no B -> A generator",
    ("cut", False): "cut trains one generator, A -> B, whose PatchNCE loss needs no reverse "
                    "generator; train B -> A as a run of its own with the domains swapped "
                    "(synthetic:square2circle, or trainA and trainB exchanged)",
    ("lomit", False): "lomit trains one generator for both ways, which takes on the exemplar's "
                      "attributes: translate with an exemplar of the other domain instead",
}


def step_name(step: int, kind: str = "AtoB") -> str:
    """The file name of `kind` (AtoB, BtoA or state) at `step`."""
    if kind not in _SUFFIX:
        raise ValueError(f"unknown run file kind {kind!r}; known: {', '.join(KINDS)}")
    return f"step_{step:06d}{_SUFFIX[kind]}"


def parse_name(name: str) -> tuple[int, str] | None:
    """(step, kind) of a run file name, or None for any other name."""
    match = _NAME.fullmatch(name)
    return (int(match.group(1)), _KIND[match.group(2)]) if match else None


def sibling(checkpoint: Path, kind: str) -> Path | None:
    """The run file of `kind` at the same step as `checkpoint`, or None when `checkpoint` is not
    named as a run's file (an imported or renamed checkpoint)."""
    parsed = parse_name(Path(checkpoint).name)
    return None if parsed is None else Path(checkpoint).with_name(step_name(parsed[0], kind))


def opposite(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    return DIRECTIONS[1 - DIRECTIONS.index(direction)]
