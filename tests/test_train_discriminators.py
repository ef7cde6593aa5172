"""The discriminators recipes build in their own files (train/cut.py, train/unit.py) keep the
state_dict key names their training states hold, so runs saved earlier still resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from i2i.train.loop import TrainOptions, train
from i2i.train.recipe import RecipeOptions
from i2i.train.registry import RECIPES
from i2i.train.state import load_state

RUN = dict(size=32, batch_size=1, ngf=4, n_blocks=1, ndf=4, disc_layers=2, progress=False,
           log_every=1, sample_every=100, checkpoint_every=2)

# The key names of each discriminator at --disc-layers 2, as training states written with the
# classes in i2i/models/discriminators.py hold them. CUT's PatchGAN: conv (0), LeakyReLU, blur,
# then per layer conv, norm, LeakyReLU (, blur), and the last conv (10). UNIT's: per scale,
# conv, LeakyReLU, conv, LeakyReLU, 1x1 conv.
CUT_D = [f"net.{i}.{p}" for i in (0, 3, 7, 10) for p in ("weight", "bias")]
UNIT_D = [f"scales.{s}.{i}.{p}" for s in range(3) for i in (0, 2, 4) for p in ("weight", "bias")]
KEYS = {"cut": {"D": CUT_D}, "unit": {"D_A": UNIT_D, "D_B": UNIT_D}}


@pytest.mark.parametrize("model", sorted(KEYS))
def test_saved_discriminator_keys_are_unchanged_and_load_back(tmp_path, model):
    options = TrainOptions(out=str(tmp_path / "run"), model=model, steps=2, **RUN)
    path = train(options).with_name("step_000002.train.safetensors")
    saved = load_file(path)
    for net, keys in KEYS[model].items():
        prefix = f"net/{net}/"
        assert sorted(k[len(prefix):] for k in saved if k.startswith(prefix)) == sorted(keys)
    # What --resume does: a recipe built afresh loads every network strictly from the state.
    torch.manual_seed(1)
    recipe, _ = RECIPES[model].make(options.resolved().recipe_options())
    assert load_state(path, recipe, torch.device("cpu")) == 2
    for net, keys in KEYS[model].items():
        weights = recipe.nets[net].state_dict()
        for key in keys:
            assert torch.equal(weights[key], saved[f"net/{net}/{key}"]), (net, key)


def test_cut_discriminator_keeps_dcgan_as_it_is():
    recipe, _ = RECIPES["cut"].make(RecipeOptions(size=64, ngf=4, n_blocks=1, ndf=4,
                                                  disc="dcgan"))
    assert type(recipe.d).__name__ == "DCGAN64"
    assert not any(type(m).__name__ == "BlurDown" for m in recipe.d.modules())
