"""The reference repositories' training options: initialisation, GAN modes, loss weights, pools,
preprocessing, flips and the B -> A direction, each with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from i2i.data import DataError, domain_samples, open_data
from i2i.data.preprocess import Preprocess
from i2i.export import parity
from i2i.export.build import ExportOptions, build
from i2i.models import read_document
from i2i.models.discriminators import PatchGAN
from i2i.pixels import from_uint8
from i2i.train.cli import main
from i2i.train.init import init_networks
from i2i.train.loop import TrainOptions, train
from i2i.train.losses import bce_gan, gan_loss, gradient_penalty, wgan

TINY = dict(size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2, progress=False,
            sample_every=100, checkpoint_every=2, log_every=1, steps=2)


def tiny(tmp_path: Path, name: str = "run", **overrides) -> TrainOptions:
    return TrainOptions(out=str(tmp_path / name), **{**TINY, **overrides})


def losses(run: Path) -> list[dict]:
    return [json.loads(line)["losses"] for line in (run / "log.jsonl").read_text().splitlines()]


def colour_image(width: int, height: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.fixture
def aligned(tmp_path) -> Path:
    """root/train and root/test of four 40x20 A|B pictures (each half 20x20)."""
    for split in ("train", "test"):
        (tmp_path / "pairs" / split).mkdir(parents=True)
        for i in range(4):
            colour_image(40, 20, i + 10 * (split == "test")).save(
                tmp_path / "pairs" / split / f"{i}.png")
    return tmp_path / "pairs"


@pytest.fixture
def unaligned(tmp_path) -> Path:
    """root/trainA and root/trainB of 24x20 pictures (wider than tall)."""
    for domain in "AB":
        (tmp_path / "photos" / f"train{domain}").mkdir(parents=True)
        for i in range(3):
            colour_image(24, 20, i + 10 * (domain == "B")).save(
                tmp_path / "photos" / f"train{domain}" / f"{i}.png")
    return tmp_path / "photos"


# Initialisation ----------------------------------------------------------------------------

def test_normal_init_draws_convolutions_from_n_0_gain_with_zero_bias():
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 32, 3))
    init_networks({"G": net}, "normal", 0.02, seed=0)
    for conv in (net[0], net[2]):
        assert abs(conv.weight.std().item() - 0.02) < 0.001      # 36864 / 18432 draws
        assert abs(conv.weight.mean().item()) < 0.001
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    assert abs(net[1].weight.mean().item() - 1.0) < 0.01 and net[1].weight.std() > 0.01
    assert torch.equal(net[1].bias, torch.zeros(64))


def test_init_is_seeded_per_network_name_and_default_keeps_pytorchs():
    def conv() -> nn.Module:
        return nn.Conv2d(8, 8, 3)

    a, b, c = conv(), conv(), conv()
    init_networks({"G_AB": a}, "normal", 0.02, seed=3)
    init_networks({"D_A": c, "G_AB": b}, "normal", 0.02, seed=3)     # other nets, other order
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)
    kept = conv()
    before = kept.weight.clone()
    init_networks({"G": kept}, "default", 0.02, seed=0)
    assert torch.equal(kept.weight, before)
    orth = nn.Linear(16, 16)
    init_networks({"G": orth}, "orthogonal", 1.0, seed=0)
    torch.testing.assert_close(orth.weight @ orth.weight.T, torch.eye(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,gain,message", [("uniform", 0.02, "unknown --init-type"),
                                               ("normal", 0.0, "--init-gain must be positive")])
def test_bad_init_settings_are_refused(kind, gain, message):
    with pytest.raises(ValueError, match=message):
        init_networks({"G": nn.Conv2d(1, 1, 1)}, kind, gain, seed=0)


def test_recipes_start_from_their_references_initialisation(tmp_path):
    assert TrainOptions(out="", model="cyclegan").resolved().init_type == "normal"
    assert TrainOptions(out="", model="maskcyclegan").resolved().init_type == "normal"
    assert TrainOptions(out="", model="pix2pix").resolved().init_type == "normal"
    assert TrainOptions(out="", model="additive").resolved().init_type == "default"
    final = train(tiny(tmp_path, model="cyclegan", steps=1, checkpoint_every=1))
    training = read_document(final)["meta"]["training"]
    assert (training["init_type"], training["init_gain"]) == ("normal", 0.02)


def test_lomit_refuses_init_type(tmp_path, capsys):
    code = main(["--model", "lomit", "--out", str(tmp_path / "r"), "--init-type", "normal"])
    assert code == 2
    assert "--init-type applies to" in capsys.readouterr().err


def test_pix2pix_trains_at_batch_1_by_default():
    assert TrainOptions(out="", model="pix2pix").resolved().batch_size == 1
    assert TrainOptions(out="", model="cyclegan").resolved().batch_size == 16


# GAN modes and loss weights ----------------------------------------------------------------

def test_gan_losses_by_hand():
    scores = torch.tensor([[-1.0, 0.5], [2.0, 0.0]])
    assert wgan(scores, True).item() == pytest.approx(-0.375)
    assert wgan(scores, False).item() == pytest.approx(0.375)
    by_hand = -torch.log(torch.sigmoid(scores)).mean()
    assert bce_gan(scores, True).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert gan_loss("vanilla") is bce_gan
    with pytest.raises(ValueError, match="unknown --gan-mode 'hinge'; known: lsgan, vanilla"):
        gan_loss("hinge")


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = sum(w * x) has gradient w everywhere: the penalty is 10 (||w|| - 1)^2 exactly.
    w = torch.full((1, 2, 3, 3), 0.5)
    critic = lambda x: (x * w).sum(dim=(1, 2, 3))          # noqa: E731
    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    got = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(10 * (w.norm().item() - 1) ** 2, rel=1e-6)


@pytest.mark.parametrize("model", ["cyclegan", "pix2pix"])
def test_wgangp_trains_and_resumes_exactly(tmp_path, model):
    options = dict(model=model, gan_mode="wgangp", steps=4)
    straight = train(tiny(tmp_path, "straight", **options))
    train(tiny(tmp_path, "split", stop_after=2, **options))
    resumed = train(tiny(tmp_path, "split", **options), resume=True)
    assert losses(straight.parent.parent) == losses(resumed.parent.parent)
    assert read_document(straight)["meta"]["loss_weights"]["gan_mode"] == "wgangp"


def test_cyclegan_loss_weights_reach_its_objective(tmp_path):
    final = train(tiny(tmp_path, model="cyclegan", lambda_cycle=3.0, lambda_identity=0.0,
                       pool_size=0))
    for record in losses(final.parent.parent):
        assert record["G"] == pytest.approx(record["gan"] + 3.0 * record["cycle"], rel=1e-5)
    assert read_document(final)["meta"]["loss_weights"]["lambda_cycle"] == 3.0


def test_pix2pix_l1_weight_reaches_its_objective(tmp_path, aligned):
    final = train(tiny(tmp_path, model="pix2pix", data=str(aligned), lambda_l1=7.0))
    for record in losses(final.parent.parent):
        assert record["G"] == pytest.approx(record["gan"] + 7.0 * record["l1"], rel=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--model", "maskcyclegan", "--lambda-identity", "1"], "--lambda-identity applies to"),
    (["--model", "additive", "--gan-mode", "vanilla"], "--gan-mode applies to"),
    (["--model", "pix2pix", "--pool-size", "10"], "--pool-size applies to"),
    (["--model", "cyclegan", "--lambda-cycle", "-1"], "--lambda-cycle must be >= 0"),
    (["--model", "lomit", "--direction", "BtoA"], "--direction BtoA does not apply to lomit"),
    (["--preprocess", "crop"], "apply to image folders only"),
    (["--no-flip"], "apply to image folders only"),
])
def test_options_a_recipe_or_data_cannot_take_are_refused(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "r"), "--steps", "1", "--size", "16"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# Preprocessing -----------------------------------------------------------------------------

def test_each_preprocess_mode_resizes_as_the_reference():
    img = colour_image(100, 60, 0)
    sizes = {mode: Preprocess(mode, 32, load).resize(img).size for mode, load in
             [("resize_and_crop", None), ("crop", None), ("scale_width", 40),
              ("scale_width_and_crop", 40), ("none", None)]}
    assert sizes == {"resize_and_crop": (36, 36), "crop": (100, 60), "scale_width": (40, 32),
                     "scale_width_and_crop": (40, 32), "none": (100, 60)}
    assert Preprocess("none", 32).resize(colour_image(33, 2, 0)).size == (32, 4)
    assert Preprocess("scale_width", 16, 64).resize(img).size == (64, 38)   # int(64 * 60 / 100)


def test_crops_and_flips_come_from_the_generator():
    x = torch.arange(3 * 20 * 30, dtype=torch.uint8).reshape(3, 20, 30)
    flipping, still = Preprocess("crop", 8), Preprocess("crop", 8, flip=False)
    for seed in range(8):
        a = flipping.augment(x, torch.Generator().manual_seed(seed))
        b = still.augment(x, torch.Generator().manual_seed(seed))
        assert a.shape == (3, 8, 8)
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))      # the same crop either way
    flips = [not torch.equal(flipping.augment(x, torch.Generator().manual_seed(s)),
                             still.augment(x, torch.Generator().manual_seed(s)))
             for s in range(16)]
    assert any(flips) and not all(flips)
    assert Preprocess("none", 8).augment(x, torch.Generator()).shape[-2:] == (20, 30)


@pytest.mark.parametrize("mode,load,message", [
    ("resize_and_crop", 8, "--load-size 8 is smaller than --size 16"),
    ("crop", 20, "--load-size does not apply to --preprocess crop"),
    ("squash", None, "unknown --preprocess 'squash'"),
])
def test_bad_preprocess_settings_are_refused(mode, load, message):
    with pytest.raises(DataError, match=message):
        Preprocess(mode, 16, load)


def test_a_crop_larger_than_a_picture_names_the_picture(unaligned):
    with pytest.raises(DataError, match=r"0.png is 24x20, smaller than the 32x32 crop"):
        open_data(str(unaligned), 32, paired=False, preprocess=Preprocess("crop", 32))


def test_pictures_of_their_own_shape_batch_only_when_shapes_agree(unaligned):
    colour_image(28, 20, 5).save(unaligned / "trainA" / "odd.png")
    data = open_data(str(unaligned), 16, paired=False, preprocess=Preprocess("none", 16))
    assert data.batch(0, 1, 0)["A"].shape[-2:] in ((20, 24), (20, 28))
    with pytest.raises(DataError, match="use --batch-size 1, or a mode with a crop"):
        data.batch(0, 4, 0)


def test_a_folder_run_with_crop_and_no_flip_records_them(tmp_path, unaligned):
    final = train(tiny(tmp_path, model="cyclegan", data=str(unaligned), preprocess="crop",
                       flip=False))
    meta = read_document(final)["meta"]
    assert meta["data"]["preprocess"] == {"mode": "crop", "load_size": None, "flip": False}
    assert (meta["training"]["preprocess"], meta["training"]["flip"]) == ("crop", False)


# B -> A --------------------------------------------------------------------------------------

def test_btoa_swaps_the_halves_of_aligned_pictures(aligned):
    forward = open_data(str(aligned), 16, paired=True)
    backward = open_data(str(aligned), 16, paired=True, direction="BtoA")
    a, b = forward.batch(1, 2, 0), backward.batch(1, 2, 0)
    assert torch.equal(a["A"], b["B"]) and torch.equal(a["B"], b["A"])
    assert backward.describe()["direction"] == "BtoA"
    with pytest.raises(DataError, match="unknown direction 'up'"):
        open_data(str(aligned), 16, paired=True, direction="up")


def test_pix2pix_trained_btoa_records_it_and_exports_parity_on_domain_b(
        tmp_path, aligned, monkeypatch):
    final = train(tiny(tmp_path, model="pix2pix", data=str(aligned), direction="BtoA"))
    meta = read_document(final)["meta"]
    assert meta["direction"] == "BtoA"
    right = Image.open(aligned / "test" / "0.png").convert("RGB").crop((20, 0, 40, 20))
    expected = from_uint8(torch.from_numpy(np.array(right)).permute(2, 0, 1))
    images, _ = domain_samples(meta["data"], (20, 20), 4, "B")
    torch.testing.assert_close(images[0], expected, atol=0, rtol=0)
    asked = []
    monkeypatch.setattr(parity, "domain_samples",
                        lambda *args: asked.append(args[-1]) or domain_samples(*args))
    out = build(final, ExportOptions(out=tmp_path / "exp", formats=("onnx",),
                                     log=lambda *_: None))
    assert asked and set(asked) == {"B"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"]["direction"] == "BtoA"


def test_synthetic_held_out_pictures_of_each_domain_differ():
    data = {"kind": "synthetic", "task": "circle2square", "seed": 0}
    a, _ = domain_samples(data, (16, 16), 2, "A")
    b, _ = domain_samples(data, (16, 16), 2, "B")
    assert a.shape == b.shape == (2, 3, 16, 16) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="domain must be A or B"):
        domain_samples(data, (16, 16), 2, "C")



@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_patchgan_knows_the_side_its_last_norm_sees(layers):
    d = PatchGAN(6, 4, layers, norm="batch").eval()
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    seen = []
    norms[-1].register_forward_hook(lambda module, args, out: seen.append(out.shape[-1]))
    for size in (64, 70, 96, 128):
        d(torch.zeros(1, 6, size, size))
        assert seen[-1] == d.last_norm_side(size), size


def test_pix2pix_too_small_for_its_discriminator_at_batch_1_says_what_to_do(tmp_path, capsys):
    args = ["--model", "pix2pix", "--size", "16", "--steps", "1", "--ngf", "4", "--ndf", "4",
            "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    assert "use --disc-layers 2, a larger --size or --batch-size" in capsys.readouterr().err
    assert main([*args, "--disc-layers", "2"]) == 0
