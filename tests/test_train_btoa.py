"""The B -> A generator of a cycle run as an inference checkpoint: written after the A -> B one,
from the same training state, rewritten by --resume when a crash left it out, and never taken
for a state or for the run's A -> B checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import i2i.train.loop as loop
from i2i.export import find_checkpoint
from i2i.models import load, read_document
from i2i.models.checkpoint import read_checkpoint
from i2i.runs import ONE_WAY_BEFORE_META, opposite, parse_name, sibling, step_name
from i2i.train import recovery
from i2i.train.loop import logged_seconds, newest_state, train
from i2i.train.recipe import RecipeOptions
from i2i.train.registry import RECIPES

from .test_train_faults import assert_same_run, tiny


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run folder of six uninterrupted steps (additive: a cycle recipe)."""
    return train(tiny(tmp_path_factory.mktemp("straight"), "run")).parent.parent


def test_a_cycle_run_writes_both_generators_with_their_direction(straight):
    folder = straight / "checkpoints"
    a_to_b, b_to_a = folder / "step_000006.safetensors", folder / "step_000006.BtoA.safetensors"
    forward, reverse = read_document(a_to_b), read_document(b_to_a)
    assert forward["meta"]["direction"] == "AtoB" and reverse["meta"]["direction"] == "BtoA"
    assert forward["model"] == reverse["model"] == "additive"
    assert forward["config"] == reverse["config"] and forward["step"] == reverse["step"] == 6
    assert {k: v for k, v in forward["meta"].items() if k != "direction"} == \
        {k: v for k, v in reverse["meta"].items() if k != "direction"}
    state = load_file(folder / "step_000006.train.safetensors")
    weights = load_file(b_to_a)
    assert weights and all(torch.equal(weights[k], state[f"net/G_BA/{k}"]) for k in weights)
    forward_weights = load_file(a_to_b)
    assert any(not torch.equal(weights[k], forward_weights[k]) for k in weights)
    load(b_to_a)                                    # an ordinary checkpoint of its model


def test_a_run_killed_between_the_two_checkpoints_resumes_to_both(tmp_path, monkeypatch,
                                                                    straight):
    real = loop.save_checkpoint

    def killed(path, *args, **kwargs):
        if Path(path).name == "step_000006.BtoA.safetensors":
            raise KeyboardInterrupt                 # a kill after the A -> B checkpoint
        return real(path, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(loop, "save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(tmp_path, "run"))
    folder = tmp_path / "run" / "checkpoints"
    assert (folder / "step_000006.safetensors").is_file()
    assert not (folder / "step_000006.BtoA.safetensors").exists()
    with pytest.warns(UserWarning, match=r"writing .*step_000006\.BtoA\.safetensors from its "
                                         "training state"):
        train(tiny(tmp_path, "run"), resume=True)
    assert_same_run(straight, tmp_path / "run")


def test_an_unreadable_or_newer_b_to_a_checkpoint_is_settled_on_resume(tmp_path, straight):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", stop_after=3))
    reverse = run / "checkpoints" / "step_000003.BtoA.safetensors"
    reverse.write_bytes(reverse.read_bytes()[:100])
    newer = run / "checkpoints" / "step_000009.BtoA.safetensors"
    newer.write_bytes(b"left by a run of another state")
    with pytest.warns(UserWarning) as caught:
        train(tiny(tmp_path, "run"), resume=True)
    said = " ".join(str(w.message) for w in caught)
    assert f"rewriting {reverse}" in said and f"removing {newer}" in said
    assert not newer.exists()
    read_checkpoint(reverse)
    assert_same_run(straight, run)


def test_a_run_from_before_b_to_a_checkpoints_gets_one_on_resume(tmp_path, straight):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", stop_after=3))
    (run / "checkpoints" / "step_000003.BtoA.safetensors").unlink()
    with pytest.warns(UserWarning, match=r"step_000003\.BtoA\.safetensors from its training"):
        train(tiny(tmp_path, "run"), resume=True)
    assert_same_run(straight, run)


def test_run_lookups_never_take_the_b_to_a_file(tmp_path, straight):
    folder = straight / "checkpoints"
    assert [p.name for _, p in recovery.step_files(straight, states=False)] == [
        "step_000003.safetensors", "step_000006.safetensors"]
    assert [p.name for _, p in recovery.step_files(straight, direction="BtoA")] == [
        "step_000003.BtoA.safetensors", "step_000006.BtoA.safetensors"]
    assert [p.name for _, p in recovery.step_files(straight, states=True)] == [
        "step_000006.train.safetensors"]
    assert newest_state(straight).name == "step_000006.train.safetensors"
    assert logged_seconds(folder / "step_000006.BtoA.safetensors") == \
        logged_seconds(folder / "step_000006.safetensors")
    runs = tmp_path / "runs"
    shutil.copytree(folder, runs / "x" / "checkpoints")
    newest = runs / "x" / "checkpoints" / "step_000006.BtoA.safetensors"
    os.utime(newest, (newest.stat().st_atime, newest.stat().st_mtime + 60))
    assert find_checkpoint(runs, "additive").name == "step_000006.safetensors"


def test_a_fresh_start_is_refused_over_b_to_a_checkpoints_alone(tmp_path, straight):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step_000003.BtoA.safetensors").write_bytes(
        (straight / "checkpoints" / "step_000003.BtoA.safetensors").read_bytes())
    with pytest.raises(FileExistsError, match="no training state"):
        train(tiny(tmp_path, "run"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_one_way_recipes_are_exactly_those_without_a_reverse_generator(name):
    entry = RECIPES[name]
    recipe, _ = entry.make(RecipeOptions(size=16, ngf=4, n_blocks=1, depth=4, ndf=4,
                                         disc_layers=2))
    kinds = loop._generators(recipe, {"direction": "AtoB"})
    one_way = recipe.one_way is not None
    assert sorted(kinds) == (["AtoB"] if one_way else ["AtoB", "BtoA"])
    # The reason older checkpoints fall back on is the recipe's own, for the recipes it names.
    assert ONE_WAY_BEFORE_META.get((entry.model, entry.supervised), recipe.one_way) == \
        recipe.one_way


def test_the_fallback_table_names_only_recipes_that_exist():
    trained = {(entry.model, entry.supervised) for entry in RECIPES.values()}
    assert set(ONE_WAY_BEFORE_META) <= trained


def test_a_one_way_run_says_why_in_its_checkpoint(tmp_path, straight):
    path = train(tiny(tmp_path, "one", supervised=True, steps=1))
    meta = read_document(path)["meta"]
    assert "fits one generator to aligned A -> B pairs" in meta["one_way"]
    assert meta["supervised"] is True
    assert not sibling(path, "BtoA").exists()
    cycle = read_document(straight / "checkpoints" / "step_000006.safetensors")["meta"]
    assert "one_way" not in cycle


def test_run_file_names():
    assert step_name(12) == "step_000012.safetensors"
    assert step_name(12, "BtoA") == "step_000012.BtoA.safetensors"
    assert step_name(12, "state") == "step_000012.train.safetensors"
    for kind in ("AtoB", "BtoA", "state"):
        assert parse_name(step_name(7, kind)) == (7, kind)
    for other in ("model.safetensors", "step_1.BtoB.safetensors", "step_000012.BtoA.pth"):
        assert parse_name(other) is None
    assert sibling(Path("r/step_000012.safetensors"), "BtoA") == \
        Path("r/step_000012.BtoA.safetensors")
    assert sibling(Path("r/imported.safetensors"), "BtoA") is None
    assert opposite("AtoB") == "BtoA" and opposite("BtoA") == "AtoB"
    with pytest.raises(ValueError, match="unknown direction 'AB'; known: AtoB, BtoA"):
        opposite("AB")
    with pytest.raises(ValueError, match="unknown run file kind"):
        step_name(1, "reverse")
