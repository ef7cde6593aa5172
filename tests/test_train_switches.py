"""Recipe switches (RecipeEntry.switches): the i2i-train flags they make, the options that carry
them, the refusal of one a recipe lacks, and the resume of runs that saved one apart."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from i2i.models.checkpoint import read_tensors, save_tensors
from i2i.train.cli import main, parser
from i2i.train.loop import TrainOptions, train
from i2i.train.registry import RECIPES, check_options

RUN = dict(model="cut", size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2,
           progress=False, log_every=1, sample_every=100, checkpoint_every=2, steps=4,
           decay_start=0.3)


def test_each_switch_is_a_flag_with_its_recipes_help():
    text = " ".join(parser().format_help().split())
    assert ("--fastcut cut: train FastCUT (PatchNCE x 10, no identity PatchNCE, flip "
            "equivariance) instead of CUT") in text
    args = parser().parse_args(["--out", "x", "--fastcut"])
    assert vars(args)["switch:fastcut"] is True


def test_switches_resolve_to_the_recipes_own_all_off_unless_given():
    assert TrainOptions(out="", model="cut").resolved().switches == {"fastcut": False}
    on = TrainOptions(out="", model="cut", switches={"fastcut": True}).resolved()
    assert on.switches == {"fastcut": True}
    assert on.recipe_options().switches == {"fastcut": True}
    assert TrainOptions(out="", model="cyclegan").resolved().switches == {}


def test_a_switch_no_recipe_has_is_refused():
    options = TrainOptions(out="", model="cut", switches={"slowcut": True})
    with pytest.raises(ValueError, match=r"^--slowcut is no recipe's switch; the switches: "
                                         r"--fastcut$"):
        check_options(RECIPES["cut"], options)


def test_the_command_line_records_the_switch_in_the_run(tmp_path, capsys):
    assert main(["--model", "cut", "--fastcut", "--out", str(tmp_path / "run"), "--steps", "1",
                 "--size", "16", "--batch-size", "2", "--ngf", "4", "--n-blocks", "1",
                 "--ndf", "4", "--disc-layers", "2", "--no-progress"]) == 0, \
        capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "options.json").read_text())
    assert saved["switches"] == {"fastcut": True} and "fastcut" not in saved
    state = read_tensors(tmp_path / "run" / "checkpoints" / "step_000001.train.safetensors")[1]
    assert state["options"]["switches"] == {"fastcut": True}
    document = read_tensors(tmp_path / "run" / "checkpoints" / "step_000001.safetensors")[1]
    assert document["meta"]["loss_weights"]["variant"] == "fastcut"


def _as_saved_before_switches(path, fastcut: bool) -> None:
    """Rewrite a training state's options as i2i wrote them when fastcut was an option."""
    tensors, document = read_tensors(path)
    options = dict(document["options"])
    del options["switches"]
    options["fastcut"] = fastcut
    save_tensors(path, tensors, {**document, "options": options})


def test_a_run_saved_with_fastcut_apart_resumes_exactly_as_fastcut(tmp_path):
    values = dict(RUN, switches={"fastcut": True})
    straight = train(TrainOptions(out=str(tmp_path / "straight"), **values))
    train(TrainOptions(out=str(tmp_path / "split"), **values, stop_after=2))
    _as_saved_before_switches(tmp_path / "split" / "checkpoints" / "step_000002.train.safetensors",
                              True)
    # Resumed with no --fastcut: the switch comes from the saved state.
    resumed = train(TrainOptions(out=str(tmp_path / "split"), **RUN), resume=True)
    sa = load_file(straight.with_name("step_000004.train.safetensors"))
    sb = load_file(resumed.with_name("step_000004.train.safetensors"))
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    saved = json.loads((tmp_path / "split" / "options.json").read_text())
    assert saved["switches"] == {"fastcut": True}


def test_a_switch_that_differs_from_the_saved_run_is_refused_on_resume(tmp_path):
    train(TrainOptions(out=str(tmp_path / "run"), **dict(RUN, steps=2)))
    _as_saved_before_switches(tmp_path / "run" / "checkpoints" / "step_000002.train.safetensors",
                              False)
    with pytest.raises(ValueError, match=re.escape("these differ from it: ['switches']")):
        train(TrainOptions(out=str(tmp_path / "run"), **dict(RUN, switches={"fastcut": True})),
              resume=True)
