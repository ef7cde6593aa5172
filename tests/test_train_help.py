"""i2i-train's help and refusals are made from the registry: which recipes take an option or a
switch, and their defaults. A registry of made-up recipes keeps these tests apart from the real
one, so that adding a model changes none of them."""

from __future__ import annotations

import pytest

import i2i.train.registry as registry
from i2i.train.cli import parser
from i2i.train.loop import TrainOptions
from i2i.train.recipe import Recipe
from i2i.train.registry import RecipeEntry, _defaults

MADE_UP = {
    "a": RecipeEntry(Recipe, "a", str, defaults=_defaults(follow="paper", gan_mode="lsgan"),
                     options=frozenset({"follow", "gan_mode"})),
    "a_supervised": RecipeEntry(Recipe, "a", str, pairs=True, supervised=True,
                                defaults=_defaults(lr=1e-4, gan_mode="vanilla"),
                                options=frozenset({"gan_mode"})),
    "b": RecipeEntry(Recipe, "b", str, labels=True,
                     defaults=_defaults(batch_size=8, n_blocks=4, follow="code"),
                     options=frozenset({"follow"}),
                     switches={"quick_mode": "train the quick variant"}),
    "c": RecipeEntry(Recipe, "c", str, defaults=_defaults(n_blocks=4)),
}


@pytest.fixture
def made_up(monkeypatch):
    monkeypatch.setattr(registry, "RECIPES", MADE_UP)


def _help() -> str:
    return " ".join(parser().format_help().split())


def test_defaults_are_listed_most_common_first_with_the_recipes_that_differ(made_up):
    assert registry.default_text("lr") == "2e-4; a --supervised: 1e-4"
    assert registry.default_text("n_blocks") == "9; b and c: 4"     # a tie: registry order
    assert registry.default_text("batch_size") == "16; b: 8"
    # Options only some recipes take count only those recipes.
    assert registry.default_text("follow") == "paper; b: code"
    assert registry.default_text("gan_mode") == "lsgan; a --supervised: vanilla"


def test_takers_and_kinds_of_recipe_name_their_models(made_up):
    assert registry.takers("follow") == "a and b"
    assert registry.takers("gan_mode") == "a"
    assert registry.models_with("pairs") == "a --supervised"
    assert registry.models_with("labels") == "b"
    assert registry.models_with("supervised") == "a"
    assert registry.switch_help() == {"quick_mode": "b: train the quick variant"}


def test_the_help_is_written_from_the_registry(made_up):
    text = _help()
    for said in ["--model MODEL a, b, c",
                 "--lr LR default 2e-4; a --supervised: 1e-4",
                 "(of each of its encoders and decoders where it has them; default 9; b and c: 4)",
                 "--batch-size BATCH_SIZE default 16; b: 8",
                 "a and b: train as the paper says (paper) or as its published reference code "
                 "does (code); default paper; b: code;",
                 "a: the GAN loss (default lsgan; a --supervised: vanilla)",
                 "--supervised a only:",
                 "--quick-mode b: train the quick variant",
                 "for the paired recipes (a --supervised); the labelled ones (b)"]:
        assert said in text, said
    assert vars(parser().parse_args(["--out", "x", "--quick-mode"]))["switch:quick_mode"]


def test_a_switch_is_refused_for_a_recipe_without_it(made_up):
    options = TrainOptions(out="", switches={"quick_mode": True})
    with pytest.raises(ValueError, match=r"^--quick-mode applies to b only, not 'a'$"):
        registry.check_options(MADE_UP["a"], options)
    registry.check_options(MADE_UP["b"], options)


def test_every_option_only_some_real_recipes_take_names_them_in_the_help():
    text = _help()
    for option in sorted(set().union(*(e.options for e in registry.RECIPES.values()))):
        assert f"{registry.takers(option)}:" in text, option
