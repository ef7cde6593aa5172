"""LOMIT's training: labelled pair data, the critic, the loss pieces and the recipe in the loop."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from i2i.data import DataError, open_data
from i2i.data.labelled import AttributeData
from i2i.data.scenes import AttributeShapes
from i2i.models import build, load, make_config, read_document
from i2i.models.discriminators import ClassifyingCritic
from i2i.train.cli import main
from i2i.train.lomit import (
    GENERATOR_LOSSES,
    Halves,
    LomitRecipe,
    content_consistency,
    critic_layers,
    gradient_penalty,
)
from i2i.train.loop import TrainOptions, train
from i2i.train.recipe import RecipeOptions

TINY_MODEL = {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2}
TINY_RUN = dict(model="lomit", data="synthetic:attributes:object_color", size=16, batch_size=2,
                ngf=4, n_blocks=1, ndf=4, progress=False, log_every=1)


def test_attribute_data_gives_independent_pairs_with_their_labels():
    data = open_data("synthetic:attributes", 16, paired=False, seed=3, labelled=True)
    batch = data.batch(2, 4, seed=3)
    assert batch["A"].shape == batch["B"].shape == (4, 3, 16, 16)
    assert batch["label_A"].shape == batch["label_B"].shape == (4, 2)
    assert data.describe()["labels"] == ["object_color", "background"]
    # Each row's labels are those the scene generator drew for that image.
    scenes = AttributeShapes(16, "train", seed=3)
    found = 0
    for index in range(len(scenes)):
        image, meta = scenes.sample(index)
        for row in range(4):
            if torch.equal(image, batch["A"][row]):
                want = [meta.labels["object_color"], meta.labels["background"]]
                assert batch["label_A"][row].tolist() == want
                found += 1
    assert found == 4
    assert not torch.equal(batch["A"], batch["B"])
    again = data.batch(2, 4, seed=3)
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_one_attribute_labels_and_folder_domains():
    one = open_data("synthetic:attributes:background", 16, paired=False, labelled=True)
    assert one.batch(0, 3, 0)["label_A"].shape == (3, 1)
    circles = open_data("synthetic:circle2square", 16, paired=False, labelled=True)
    batch = circles.batch(0, 3, 0)
    assert batch["label_A"].eq(0).all() and batch["label_B"].eq(1).all()
    assert circles.describe()["labels"] == ["domain"]


@pytest.mark.parametrize("spec,labelled,message", [
    ("synthetic:attributes", False, "labelled scenes for exemplar models"),
    ("synthetic:attributes:hair", True, "distinct attribute names from object_color, background"),
    ("synthetic:attributes:background,background", True, "distinct attribute names"),
    ("synthetic:stripes", True, r"known: .*synthetic:attributes\[:attribute,...\]"),
])
def test_attribute_data_errors(spec, labelled, message):
    with pytest.raises(DataError, match=message):
        open_data(spec, 16, paired=False, labelled=labelled)


def test_critic_heads_and_sizes():
    critic = ClassifyingCritic(32, n_labels=2, ndf=4, layers=critic_layers(32))
    scores, logits = critic(torch.zeros(3, 3, 32, 32))
    assert scores.shape == (3, 1, 2, 2) and logits.shape == (3, 2)
    assert critic_layers(128) == 6 and critic_layers(16) == 3
    with pytest.raises(ValueError, match="built for 32x32"):
        critic(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="power-of-two --size"):
        critic_layers(48)


def test_the_training_decomposition_is_the_inference_translation():
    torch.manual_seed(0)
    t = build("lomit", make_config("lomit", TINY_MODEL)).eval()
    x1, x2 = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        x12, x21 = Halves(t, x1, x2).crossed()
        assert torch.equal(x12, t(x1, x2)["translation"])
        assert torch.equal(x21, t(x2, x1)["translation"])


def test_content_consistency_by_hand():
    # Two pixels: masks 0.2 and 0.8, content vectors at 60 degrees (cos 0.5).
    m = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2)
    c = torch.tensor([[1.0, 0.5], [0.0, math.sqrt(3) / 2]]).view(1, 2, 1, 2)
    # pairs (i, j): |m_i - m_j| * cos = 0 (diagonal), 0.6 * 0.5 twice -> mean over 4 pairs.
    assert content_consistency(m, c).item() == pytest.approx(0.15, abs=1e-6)
    c.requires_grad_(True)
    m = m.clone().requires_grad_(True)
    content_consistency(m, c).backward()
    assert c.grad is None and m.grad is not None        # content is not back-propagated


def test_gradient_penalty_of_a_linear_critic():
    class Linear(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1).view(-1, 1, 1, 1), None

    w = torch.full((1, 3, 4, 4), 0.25)                    # ||w|| = 0.25 * sqrt(48)
    penalty = gradient_penalty(Linear(w), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4),
                               torch.Generator().manual_seed(0))
    assert penalty.item() == pytest.approx((0.25 * math.sqrt(48) - 1) ** 2, rel=1e-5)


def _recipe(n_labels=1) -> LomitRecipe:
    torch.manual_seed(0)
    return LomitRecipe(make_config("lomit", TINY_MODEL), RecipeOptions(size=16, ndf=4, lr=1e-3),
                       n_labels)


def test_the_generator_moves_every_n_critic_steps_and_the_critic_every_step():
    recipe = _recipe()
    data = open_data("synthetic:attributes:object_color", 16, paired=False, labelled=True)
    before = [p.detach().clone() for p in recipe.translator.parameters()]
    critic_before = [p.detach().clone() for p in recipe.critic.parameters()]
    for step in range(4):
        recipe.step_index = step
        losses = recipe.step(data.batch(step, 2, 0))
        assert all(math.isnan(losses[k]) for k in GENERATOR_LOSSES)
    assert all(torch.equal(a, b) for a, b in zip(before, recipe.translator.parameters(),
                                                 strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic_before, recipe.critic.parameters(),
                                                     strict=True))
    recipe.step_index = 4
    losses = recipe.step(data.batch(4, 2, 0))
    assert all(math.isfinite(losses[k]) for k in GENERATOR_LOSSES)
    assert not all(torch.equal(a, b) for a, b in zip(before, recipe.translator.parameters(),
                                                     strict=True))


def test_a_few_steps_lower_the_reconstruction_losses():
    recipe = _recipe()
    batch = open_data("synthetic:attributes:object_color", 16, paired=False,
                      labelled=True).batch(0, 4, 0)
    history = []
    for step in range(60):
        recipe.step_index = step
        losses = recipe.step(batch)
        if step % 5 == 4:
            history.append(losses)
    first, last = history[0], history[-1]
    for key in ("rebuild", "cycle", "G"):
        assert last[key] < 0.8 * first[key], (key, first[key], last[key])
    assert last["cls_real"] < first["cls_real"]


def test_i2i_train_lomit_writes_a_loadable_run_and_the_paper_columns(tmp_path):
    final = train(TrainOptions(out=str(tmp_path / "run"), steps=6, sample_every=6,
                               checkpoint_every=6, **TINY_RUN))
    run = final.parent.parent
    options = json.loads((run / "options.json").read_text())
    assert (options["lr"], options["batch_size"], options["n_blocks"]) == (1e-4, 2, 1)
    grid = Image.open(run / "samples" / "step_000006.png")
    tile = 16 * 8 + 2 * 8                               # a scaled tile and its gap
    assert round(grid.width / tile) == 5                # input, mask, exemplar, mask, output
    assert round(grid.height / tile) == 8               # one row per fixed pair
    module, spec = load(final)
    assert [t.name for t in spec.inputs] == ["image", "exemplar"]
    out = module(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    assert out["translation"].shape == (1, 3, 16, 16)
    data = read_document(final)["meta"]["data"]
    assert (data["kind"], data["labels"]) == ("synthetic_attributes", ["object_color"])


def test_lomit_defaults_follow_the_paper():
    o = TrainOptions(out="", model="lomit").resolved()
    assert (o.lr, o.batch_size, o.n_blocks) == (1e-4, 8, 4)
    o = TrainOptions(out="", model="cyclegan").resolved()
    assert (o.lr, o.batch_size, o.n_blocks) == (2e-4, 16, 9)
    assert TrainOptions(out="", model="lomit", lr=3e-4).resolved().lr == 3e-4


def test_lomit_resume_is_exact(tmp_path):
    values = dict(steps=7, sample_every=7, checkpoint_every=3, decay_start=0.3, **TINY_RUN)
    straight = train(TrainOptions(out=str(tmp_path / "straight"), **values))
    train(TrainOptions(out=str(tmp_path / "split"), stop_after=3, **values))
    resumed = train(TrainOptions(out=str(tmp_path / "split"), **values), resume=True)
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_file(straight.with_name("step_000007.train.safetensors"))
    sb = load_file(resumed.with_name("step_000007.train.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("args,message", [
    (["--data", "synthetic:attributes:hair"], "distinct attribute names"),
    (["--size", "24"], "power-of-two --size"),
])
def test_lomit_cli_errors(tmp_path, capsys, args, message):
    base = ["--model", "lomit", "--out", str(tmp_path / "run"), "--steps", "1", "--size", "16",
            "--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--no-progress",
            "--data", "synthetic:attributes"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_additive_refuses_labelled_scenes(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "run"), "--data", "synthetic:attributes",
                 "--size", "16", "--steps", "1", "--no-progress"]) == 2
    assert "exemplar models" in capsys.readouterr().err


def test_attribute_data_rejects_bad_names_directly():
    with pytest.raises(DataError):
        AttributeData(16, ("object_color", "shape"))


def test_the_recipe_initialises_as_the_paper_says():
    recipe = LomitRecipe(make_config("lomit", {"ngf": 16, "style_dim": 8, "n_res": 1,
                                               "mlp_dim": 64, "mask_layers": 2}),
                         RecipeOptions(size=32, ndf=16), 1)
    conv = recipe.translator.decoder.blocks[0].body[1]                 # 64 -> 64, 3x3
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert conv.bias.abs().max().item() == 0.0
    first = recipe.critic.trunk[0]
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.1)
    # What it is for: the style codes of different images differ from the start.
    scenes = open_data("synthetic:attributes", 32, paired=False, labelled=True).batch(0, 16, 0)
    with torch.no_grad():
        codes = recipe.translator.style_fg(scenes["A"])
    assert codes.std(dim=0).mean().item() > 0.01
