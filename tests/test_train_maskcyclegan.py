"""Mask CycleGAN's training: masks from a scheme, two discriminators per domain, the loop."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from i2i.data import open_data
from i2i.data.masks import parse_mask_spec
from i2i.models import load, make_config, read_document
from i2i.train.cli import main
from i2i.train.loop import TrainOptions, train
from i2i.train.maskcyclegan import MaskCycleGANRecipe, masked_l1
from i2i.train.recipe import RecipeOptions

TINY_RUN = dict(model="maskcyclegan", size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4,
                disc_layers=2, progress=False, log_every=1)


def test_masked_l1_by_hand():
    a = torch.zeros(1, 3, 1, 2)
    b = torch.tensor([[[[1.0, 2.0]], [[1.0, 2.0]], [[1.0, 2.0]]]])       # |a - b| = 1, 2
    m = torch.tensor([[[[1.0, 0.0]]]])
    assert masked_l1(a, b, m).item() == pytest.approx(0.5)             # (1 * 3) / 6
    assert masked_l1(a, b, 1 - m).item() == pytest.approx(1.0)         # (2 * 3) / 6


def _recipe(masks="rects") -> MaskCycleGANRecipe:
    torch.manual_seed(0)
    config = make_config("maskcyclegan", {"ngf": 4, "n_blocks": 1})
    return MaskCycleGANRecipe(config, RecipeOptions(size=16, ndf=4, disc_layers=2, lr=1e-3),
                              masks)


def test_each_step_draws_masks_from_the_scheme():
    recipe = _recipe("center:0.5")
    m = recipe.draw(torch.zeros(3, 3, 16, 16))
    assert torch.equal(m, parse_mask_spec("center:0.5").sample(3, 16, 16))
    rects = _recipe("rects:min_area=0.3")
    drawn = rects.draw(torch.zeros(8, 3, 16, 16))
    assert drawn.shape == (8, 1, 16, 16)
    assert (drawn.flatten(1).mean(1) >= 0.3).all()
    assert not torch.equal(drawn, rects.draw(torch.zeros(8, 3, 16, 16)))   # a stream, not fixed


def test_a_few_steps_lower_the_cycle_loss():
    recipe = _recipe()
    batch = open_data("synthetic:circle2square", 16, paired=False).batch(0, 4, 0)
    history = [recipe.step(batch) for _ in range(40)]
    first = sum(h["cycle"] for h in history[:5]) / 5
    last = sum(h["cycle"] for h in history[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    first_id = sum(h["identity"] for h in history[:5]) / 5
    last_id = sum(h["identity"] for h in history[-5:]) / 5
    assert last_id < 0.8 * first_id, (first_id, last_id)
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


def test_i2i_train_maskcyclegan_writes_a_loadable_run(tmp_path):
    final = train(TrainOptions(out=str(tmp_path / "run"), steps=3, sample_every=3,
                               checkpoint_every=3, masks="rects:min_area=0.2", **TINY_RUN))
    run = final.parent.parent
    document = read_document(final)
    assert document["meta"]["loss_weights"]["masks"] == "rects:min_area=0.2"
    state = load_file(final.with_name("step_000003.train.safetensors"))
    for name in ("G_BA", "D_full_A", "D_masked_A", "D_full_B", "D_masked_B"):
        assert any(k.startswith(f"net/{name}/") for k in state), name
    grid = Image.open(run / "samples" / "step_000003.png")
    tile = 16 * 8 + 2 * 8
    assert round(grid.height / tile) == 7      # input, then (mask, output) for three masks
    module, spec = load(final)
    assert [t.name for t in spec.inputs] == ["image", "mask"]
    out = module(torch.zeros(2, 3, 16, 16), torch.ones(2, 1, 16, 16))["translation"]
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]


def test_maskcyclegan_resume_is_exact(tmp_path):
    values = dict(steps=5, sample_every=5, checkpoint_every=2, decay_start=0.3, **TINY_RUN)
    straight = train(TrainOptions(out=str(tmp_path / "straight"), **values))
    train(TrainOptions(out=str(tmp_path / "split"), stop_after=2, **values))
    resumed = train(TrainOptions(out=str(tmp_path / "split"), **values), resume=True)
    sa = load_file(straight.with_name("step_000005.train.safetensors"))
    sb = load_file(resumed.with_name("step_000005.train.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("args,message", [
    (["--masks", "rects"], "--masks applies to maskcyclegan only"),
    (["--model", "maskcyclegan", "--masks", "circle:0.5"], "unknown mask scheme 'circle'"),
    (["--model", "maskcyclegan", "--masks", "rects:min_area=2"], "min_area"),
])
def test_mask_option_errors(tmp_path, capsys, args, message):
    base = ["--out", str(tmp_path / "run"), "--steps", "1", "--size", "16", "--ngf", "4",
            "--n-blocks", "1", "--ndf", "4", "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
