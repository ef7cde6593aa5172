"""CUT: the anti-aliased sampling, the PatchNCE features and loss, and the CUT / FastCUT recipe
(its variants, flips, resume, the --fastcut option)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import load_file

from i2i.data import open_data
from i2i.models import build, make_config
from i2i.models.cut import BlurDown, BlurUp, CUTGenerator
from i2i.models.discriminators import PatchGAN
from i2i.train.cli import main
from i2i.train.cut import CUTRecipe, antialiased, patch_nce
from i2i.train.loop import TrainOptions, train
from i2i.train.recipe import RecipeOptions

TINY_RUN = dict(model="cut", size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2,
                progress=False, log_every=1, sample_every=3, checkpoint_every=3)


def test_blur_down_removes_a_checkerboard_and_keeps_a_flat_image():
    # [1, 2, 1] / 4 on +1, -1, +1 is 0, and the reflect pad keeps the parity at the borders; a
    # plain stride-2 conv would alias the checkerboard to a flat +1 or -1.
    rows, cols = torch.arange(6)[:, None], torch.arange(8)[None, :]
    checker = ((rows + cols) % 2 * 2 - 1).float().expand(1, 2, 6, 8)
    assert torch.equal(BlurDown(2)(checker), torch.zeros(1, 2, 3, 4))
    flat = torch.full((1, 2, 6, 8), 0.3)
    torch.testing.assert_close(BlurDown(2)(flat), torch.full((1, 2, 3, 4), 0.3), atol=1e-7,
                               rtol=0)


def test_blur_up_spreads_a_pixel_by_the_1331_filter_centred_on_its_two_pixels():
    delta = torch.zeros(1, 1, 6, 6)
    delta[0, 0, 2, 3] = 1.0
    up = BlurUp(1)(delta)[0, 0]
    assert up.shape == (12, 12)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])       # [1, 3, 3, 1] x 2 / 8 per axis
    expected = torch.zeros(12, 12)
    expected[3:7, 5:9] = taps[:, None] * taps[None, :]  # rows 2*2-1..2*2+2, cols 2*3-1..2*3+2
    torch.testing.assert_close(up, expected, atol=1e-7, rtol=0)
    flat = torch.full((2, 3, 5, 7), -0.6)               # the level is kept, borders included
    torch.testing.assert_close(BlurUp(3)(flat), torch.full((2, 3, 10, 14), -0.6), atol=1e-6,
                               rtol=0)


def test_blur_filters_are_buffers_outside_the_checkpoint():
    model = build("cut", make_config("cut", {"ngf": 4, "n_blocks": 1}))
    buffers = dict(model.named_buffers())
    assert sorted(buffers) == ["generator.down.0.blur.filter", "generator.down.1.blur.filter",
                               "generator.up.0.blur.filter", "generator.up.1.blur.filter"]
    assert not any(name.endswith("filter") for name, _ in model.named_parameters())
    assert not any(key.endswith("filter") for key in model.state_dict())
    assert model.double().generator.up[0].blur.filter.dtype == torch.float64


@pytest.mark.parametrize("n_blocks,taps", [(6, (0, 4)), (2, (0, 1)), (1, (0,)), (0, ())])
def test_nce_features_are_the_reference_layers(n_blocks, taps):
    torch.manual_seed(0)
    g = CUTGenerator(3, 3, 4, n_blocks).eval()
    assert g.nce_blocks == taps
    seen = {}
    hooks = [g.stem.pad.register_forward_hook(lambda m, i, o: seen.setdefault("pad", o))]
    for index, layer in enumerate(g.down):
        hooks.append(layer.step.conv.register_forward_hook(
            lambda m, i, o, index=index: seen.setdefault(f"down{index}", o)))
    for index, block in enumerate(g.blocks):
        hooks.append(block.register_forward_hook(
            lambda m, i, o, index=index: seen.setdefault(f"block{index}", o)))
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    with torch.no_grad():
        g(x)                                            # the hooks see a full forward pass
        feats = g.nce_features(x)
    want = [seen["pad"], seen["down0"], seen["down1"]] + [seen[f"block{b}"] for b in taps]
    assert [tuple(f.shape) for f in feats] == [(2, 3, 22, 26), (2, 8, 16, 20), (2, 16, 8, 10)] + \
        [(2, 16, 4, 5)] * len(taps)
    assert [f.shape[1] for f in feats] == g.nce_channels()
    for got, expected in zip(feats, want, strict=True):
        assert torch.equal(got, expected)
    for hook in hooks:
        hook.remove()


def test_the_antialiased_patchgan_blurs_after_each_strided_step():
    torch.manual_seed(0)
    plain, blurred = PatchGAN(3, 4, 3), antialiased(PatchGAN(3, 4, 3))
    # The reference's order: conv stride 1, (norm,) LeakyReLU, blur-then-stride-2, three times.
    kinds = [type(m).__name__ for m in blurred.net]
    assert kinds == ["Conv2d", "LeakyReLU", "BlurDown",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU", "BlurDown",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU", "BlurDown",
                     "Conv2d", "InstanceNorm2d", "LeakyReLU", "Conv2d"]
    assert all(m.stride == (1, 1) for m in blurred.net if isinstance(m, torch.nn.Conv2d))
    assert sum(p.numel() for p in blurred.parameters()) == \
        sum(p.numel() for p in plain.parameters())
    with torch.no_grad():
        assert blurred(torch.randn(2, 3, 256, 256)).shape == (2, 1, 30, 30)


def test_patch_nce_by_hand():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])             # (1, 2, 2), unit rows
    k = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])
    tau = 0.07
    # query 0: positive 0.6, negatives: itself -> -10, the other key 0.0
    # query 1: positive 1.0, negatives: the other key 0.8, itself -> -10
    rows = [(0.6, [-10.0, 0.0]), (1.0, [0.8, -10.0])]
    want = sum(math.log(sum(math.exp(v / tau) for v in [pos, *neg])) - pos / tau
               for pos, neg in rows) / 2
    assert patch_nce(q, k, tau).item() == pytest.approx(want, rel=1e-5)


def test_patch_nce_negatives_stay_within_each_image():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 5, 4, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(3, 5, 4, generator=g), dim=-1)
    each = torch.stack([patch_nce(q[i:i + 1], k[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(patch_nce(q, k), each.mean(), atol=1e-6, rtol=0)


def _recipe(fastcut: bool) -> CUTRecipe:
    torch.manual_seed(0)
    return CUTRecipe(make_config("cut", {"ngf": 4, "n_blocks": 1}),
                     RecipeOptions(size=16, ndf=4, disc_layers=2, lr=1e-3,
                                   switches={"fastcut": fastcut}))


def test_networks_start_from_the_reference_codes_xavier_init():
    options = TrainOptions(out="", model="cut", size=16, ngf=4, n_blocks=1, ndf=4,
                           disc_layers=2).resolved()
    assert (options.init_type, options.init_gain) == ("xavier", 0.02)
    recipe, _ = options.recipe().make(options.recipe_options())
    for net in (recipe.translator, recipe.head, recipe.d):
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight
                fan_in = w.shape[1] * w[0, 0].numel()
                fan_out = w.shape[0] * w[0, 0].numel()
                std = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))   # xavier-normal, gain 0.02
                assert w.std().item() == pytest.approx(std, rel=0.25), module
                assert module.bias is None or not module.bias.any()


@pytest.mark.parametrize("fastcut", [False, True])
def test_variants_set_their_weights_and_what_the_generator_sees(fastcut):
    recipe = _recipe(fastcut)
    assert recipe.loss_weights["lambda_nce"] == (10.0 if fastcut else 1.0)
    assert recipe.loss_weights["nce_identity"] is (not fastcut)
    batch = open_data("synthetic:circle2square", 16, paired=False).batch(0, 2, 0)
    x, y = batch["A"], batch["B"]
    first_inputs = []
    g = recipe.translator.generator
    hook = g.register_forward_pre_hook(lambda m, args: first_inputs.append(args[0]))
    kinds = []
    for _ in range(10):
        first_inputs.clear()
        losses = recipe.step(batch)
        real = first_inputs[0]                          # the translation pass comes first
        if fastcut:
            assert "nce_identity" not in losses
            assert torch.equal(real, x) or torch.equal(real, x.flip(3))
            kinds.append(torch.equal(real, x.flip(3)))
        else:
            assert torch.equal(real, torch.cat([x, y]))  # G(x) and the identity G(y)
            assert losses["G"] == pytest.approx(losses["gan"] + 0.5 * (
                losses["nce"] + losses["nce_identity"]), rel=1e-5)
    hook.remove()
    if fastcut:
        assert any(kinds) and not all(kinds)            # flipped in some steps, not in others


def test_a_few_steps_lower_the_patch_nce_loss():
    recipe = _recipe(False)
    batch = open_data("synthetic:circle2square", 16, paired=False).batch(0, 2, 0)
    history = [recipe.step(batch)["nce"] for _ in range(30)]
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5, history


@pytest.mark.parametrize("fastcut", [None, True])
def test_cut_resume_is_exact(tmp_path, fastcut):
    values = dict(TINY_RUN, steps=6, decay_start=0.3,
                  switches={} if fastcut is None else {"fastcut": fastcut})
    straight = train(TrainOptions(out=str(tmp_path / "straight"), **values))
    train(TrainOptions(out=str(tmp_path / "split"), **values, stop_after=3))
    resumed = train(TrainOptions(out=str(tmp_path / "split"), **values), resume=True)
    sa = load_file(straight.with_name("step_000006.train.safetensors"))
    sb = load_file(resumed.with_name("step_000006.train.safetensors"))
    assert any(k.startswith("net/F/") for k in sa) and "pool/patches/rng" in sa
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert not straight.with_name("step_000006.BtoA.safetensors").exists()


def test_fastcut_is_refused_for_other_models(tmp_path, capsys):
    code = main(["--model", "cyclegan", "--fastcut", "--out", str(tmp_path / "run"),
                 "--steps", "1", "--size", "16", "--ngf", "4", "--n-blocks", "1",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(r"--fastcut applies to cut only, not 'cyclegan'", err), err
    assert not (tmp_path / "run").exists()
