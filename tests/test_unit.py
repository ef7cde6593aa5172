"""UNIT: the networks of the public code, deterministic inference, the fused encoder, the recipe
(initialisation, the paper's shared layers, exact resume, folders, errors)."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from i2i.kernels import use_fused_kernels
from i2i.kernels._triton import runs_triton
from i2i.models import build, get_entry, load, make_config, read_document
from i2i.train.cli import main
from i2i.train.loop import TrainOptions, train
from i2i.train.recipe import RecipeOptions
from i2i.train.registry import RECIPES
from i2i.train.unit import MultiScaleDiscriminator

from .tolerances import assert_kernel_close

TINY = {"ngf": 4, "n_res": 1}
RUN = dict(model="unit", size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2,
           progress=False, sample_every=3, checkpoint_every=3, log_every=1)


def tiny_unit(seed: int = 0, **values) -> nn.Module:
    torch.manual_seed(seed)
    return build("unit", make_config("unit", {**TINY, **values})).eval()


def images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def options(tmp_path, name: str = "run", **overrides) -> TrainOptions:
    return TrainOptions(out=str(tmp_path / name), **{**RUN, "steps": 4, **overrides})


# ---------------------------------------------------------------------------------------------
# The networks


def test_the_default_networks_have_the_public_codes_parameter_count():
    # By hand, ngf 64, 2 halvings, 4 residual blocks, 3 channels (weights + biases):
    # encoder  c7 3->64: 9,472; conv4 64->128: 131,200; conv4 128->256: 524,544;
    #          8 residual convs 256->256: 8 x 590,080
    # decoder  8 residual convs: 8 x 590,080; conv5 256->128: 819,328 + LN 256;
    #          conv5 128->64: 204,864 + LN 128; c7 64->3: 9,411
    expected = (9_472 + 131_200 + 524_544 + 16 * 590_080 + 819_328 + 256 + 204_864 + 128
                + 9_411)
    with torch.device("meta"):
        module = build("unit")
    assert sum(p.numel() for p in module.parameters()) == expected == 11_140_483


def test_inference_decodes_the_code_without_noise_in_either_mode():
    module = tiny_unit()
    x = images()
    with torch.no_grad():
        eval_out = module(x)["translation"]
        train_out = module.train()(x)["translation"]
        by_hand = module.decoder(module.encoder(x))
    assert torch.equal(eval_out, train_out)
    assert torch.equal(eval_out, by_hand)
    assert module.encoder(x).shape == (2, 16, 4, 4)        # ngf 4 x 2^2 channels at H/4


def test_a_seed_adds_the_same_noise_to_every_row_and_repeats():
    module = tiny_unit()
    x = images(3)
    with torch.no_grad():
        mean = module(x)["translation"]
        first = module.sample(x, seed=5)["translation"]
        again = module.sample(x, seed=5)["translation"]
        other = module.sample(x, seed=6)["translation"]
        rows = torch.cat([module.sample(x[i:i + 1], seed=5)["translation"] for i in range(3)])
        none = module.sample(x, seed=5, scale=0.0)["translation"]
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3 and (first - mean).abs().max() > 1e-3
    torch.testing.assert_close(first, rows, atol=1e-5, rtol=0)      # batching changes nothing
    torch.testing.assert_close(none, mean, atol=1e-6, rtol=0)


def test_the_layer_norm_is_per_sample_over_channels_and_pixels():
    module = tiny_unit()
    norm = module.decoder.up[0].norm
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0, -1.0, 0.25, 1.5, 0.75]))
        norm.bias.copy_(torch.linspace(-1, 1, 8))
    x = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 7
    x[1] = x[1] * 10 - 40                                  # a row with other statistics
    rows = x.double().flatten(1)
    mean = rows.mean(1)[:, None, None, None]
    var = rows.var(1, unbiased=False)[:, None, None, None]
    want = (x.double() - mean) / torch.sqrt(var + 1e-5)
    want = want * norm.weight.double()[:, None, None] + norm.bias.double()[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(norm(x).double(), want, atol=1e-5, rtol=0)


def test_a_code_smaller_than_two_pixels_is_refused_by_the_spec():
    signature = get_entry("unit").spec(make_config("unit", TINY))
    assert signature.size_multiple == 4 and signature.smallest == 8
    with pytest.raises(ValueError, match=r"multiples of 4, at least 8.*try 8x8"):
        signature.check_size(4, 4)


def test_the_encoder_and_the_decoders_residual_blocks_are_fused():
    assert runs_triton(torch.empty(1)), "the fused model must run the kernels, not references"
    eager = tiny_unit(n_res=2)
    fused = use_fused_kernels(tiny_unit(n_res=2))
    # encoder: stem + 2 halvings + 2 blocks; decoder: 2 blocks; its LN steps stay eager
    assert fused.fused_kernels == 1 + 2 + 2 + 2 and fused.unfused_kernels == []
    x = images(size=20)
    with torch.no_grad():
        want, got = eager(x)["translation"], fused(x)["translation"]
        truth = tiny_unit(n_res=2).double()(x.double())["translation"]
    assert_kernel_close(got, want, truth, torch.float32, "unit translation")


def test_the_multiscale_discriminator_halves_between_scales():
    d = MultiScaleDiscriminator(3, ndf=4, layers=2, scales=3)
    scores = d(images(2, 16))
    assert [tuple(s.shape) for s in scores] == [(2, 1, 4, 4), (2, 1, 2, 2), (2, 1, 1, 1)]
    assert MultiScaleDiscriminator.smallest(4, 3) == 64      # the code's 4 layers, 3 scales
    with pytest.raises(RuntimeError):                        # reflect padding of a 1-pixel map
        d(images(2, 8))


# ---------------------------------------------------------------------------------------------
# The recipe


def recipe(follow: str = "code", **values):
    o = RecipeOptions(**{"size": 16, "ngf": 4, "n_blocks": 1, "ndf": 4, "disc_layers": 2,
                         "lr": 1e-4, "follow": follow, **values})
    torch.manual_seed(0)
    return RECIPES["unit"].make(o)[0]


def test_initialisation_follows_the_code():
    r = recipe(ngf=16, ndf=16)
    conv = r.translator.encoder.blocks[0].conv1                # 64 -> 64, 3x3: fan in 576
    assert abs(conv.weight.std().item() / (2 / 576) ** 0.5 - 1) < 0.05
    assert torch.count_nonzero(conv.bias) == 0
    d_conv = r.d_a.scales[0][2]                                # 16 -> 32, 4x4
    assert abs(d_conv.weight.std().item() / 0.02 - 1) < 0.05
    scale = r.reverse.decoder.up[0].norm.weight
    assert 0 <= scale.min() and scale.max() < 1 and scale.std() > 0.1


def test_the_optimisers_are_the_codes_adam():
    r = recipe()
    for opt in r.optimizers.values():
        group = opt.param_groups[0]
        assert group["lr"] == 1e-4 and group["betas"] == (0.5, 0.999)
        assert group["weight_decay"] == 1e-4
    assert r.loss_weights["recon_kl_w"] == 0.01 and r.loss_weights["recon_x_cyc_w"] == 10


def test_follow_paper_shares_the_latent_layers_and_code_does_not():
    shared, separate = recipe("paper"), recipe("code")
    assert shared.reverse.encoder.blocks[-1] is shared.translator.encoder.blocks[-1]
    assert shared.translator.decoder.blocks[0] is shared.reverse.decoder.blocks[0]
    assert shared.translator.encoder.stem is not shared.reverse.encoder.stem
    assert separate.reverse.encoder.blocks[-1] is not separate.translator.encoder.blocks[-1]
    # A shared parameter is stepped once.
    params = shared.optimizers["G"].param_groups[0]["params"]
    assert len(params) == len({id(p) for p in params})
    every = {id(p) for net in (shared.translator, shared.reverse) for p in net.parameters()}
    assert len(params) == len(every)


@pytest.mark.parametrize("follow", ["code", "paper"])
def test_resume_gives_the_same_run_as_training_straight(tmp_path, follow):
    straight = train(options(tmp_path, "straight", steps=6, decay_start=0.3, follow=follow))
    train(options(tmp_path, "split", steps=6, decay_start=0.3, follow=follow, stop_after=3))
    resumed = train(options(tmp_path, "split", steps=6, decay_start=0.3, follow=follow),
                    resume=True)
    for name in ("step_000006.safetensors", "step_000006.BtoA.safetensors",
                 "step_000006.train.safetensors"):     # nets, Adam moments, the noise stream
        a, b = load_file(straight.with_name(name)), load_file(resumed.with_name(name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    forward, _ = load(straight)
    reverse, _ = load(straight.with_name("step_000006.BtoA.safetensors"))
    blocks = ("encoder.blocks.0.conv1.weight", "decoder.blocks.0.conv1.weight")
    same = [torch.equal(forward.state_dict()[k], reverse.state_dict()[k]) for k in blocks]
    assert same == ([True, True] if follow == "paper" else [False, False])


def test_trains_on_a_cyclegan_folder_from_the_command_line(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    for folder, count in (("trainA", 3), ("trainB", 4)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (24, 20, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(tmp_path / "data" / folder / f"{i}.png")
    code = main(["--model", "unit", "--data", str(tmp_path / "data"), "--size", "16",
                 "--steps", "2", "--batch-size", "2", "--ngf", "4", "--n-blocks", "1",
                 "--ndf", "4", "--disc-layers", "2", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "run" / "checkpoints"
    for name, direction in (("step_000002.safetensors", "AtoB"),
                            ("step_000002.BtoA.safetensors", "BtoA")):
        module, spec = load(folder / name)
        assert [t.name for t in spec.inputs] == ["image"]
        document = read_document(folder / name)
        assert document["meta"]["direction"] == direction
        assert document["meta"]["data"]["kind"] == "unaligned"
        assert document["meta"]["training"]["disc_layers"] == 2
        assert document["meta"]["loss_weights"]["follow"] == "code"
    assert Image.open(tmp_path / "run" / "samples" / "step_000002.png").height > 16


def test_the_recipe_defaults_are_the_codes():
    resolved = TrainOptions(out="x", model="unit").resolved()
    assert (resolved.lr, resolved.n_blocks, resolved.disc_layers, resolved.follow) == \
        (1e-4, 4, 4, "code")
    assert TrainOptions(out="x", model="cyclegan").resolved().disc_layers == 3


@pytest.mark.parametrize("args,message", [
    (["--size", "8", "--disc-layers", "2"],
     "--size 8 is too small for unit's discriminator: 3 scales of 2 halvings need at least 16 "
     "pixels; use --size 16 or fewer --disc-layers"),
    (["--size", "32"], "3 scales of 4 halvings need at least 64 pixels"),
    (["--size", "64", "--disc", "dcgan"], "--disc dcgan does not apply to unit"),
    (["--size", "16", "--disc-layers", "2", "--follow", "paper", "--n-blocks", "0"],
     "it needs --n-blocks of at least 1"),
    (["--size", "18"], "--size 18 must be a multiple of 4 for unit"),
])
def test_cli_errors_say_what_to_change(tmp_path, capsys, args, message):
    base = ["--model", "unit", "--out", str(tmp_path / "run"), "--steps", "1", "--ngf", "4",
            "--ndf", "4", "--batch-size", "1", "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-train: error:") and re.search(re.escape(message), err), err
    assert not (tmp_path / "run" / "checkpoints").exists()
