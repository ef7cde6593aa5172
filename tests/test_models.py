"""Tests for i2i.models: every registry model's contract, parameter counts, additive and pix2pix
behaviour, size checks, the unknown-model message and the discriminators."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2i.models import MODELS, UnknownModelError, build, get_entry, make_config
from i2i.models.discriminators import DCGAN64, PatchGAN

# Tiny configuration per registry model. A model added to MODELS must get a line here; the
# contract test fails (not skips) for a model without one.
TINY = {
    "additive": {"ngf": 4, "n_blocks": 1, "strength": 0.7},
    "cyclegan": {"ngf": 4, "n_blocks": 2},
    "cut": {"ngf": 4, "n_blocks": 2},
    "lomit": {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2},
    "maskcyclegan": {"ngf": 4, "n_blocks": 1},
    "pix2pix": {"ngf": 4, "depth": 5},
    "unit": {"ngf": 4, "n_res": 1},
}




def tiny_model(name: str) -> tuple[nn.Module, object]:
    """(eval-mode module, spec) of the tiny configuration of a registry model."""
    assert name in TINY, (f"model {name!r} is in MODELS but has no tiny configuration in "
                          "tests/test_models.py TINY; add one")
    config = make_config(name, TINY[name])
    torch.manual_seed(0)
    return build(name, config).eval(), get_entry(name).spec(config)


def allowed_size(spec, at_least: int = 16) -> tuple[int, int]:
    """A non-square (H, W) the spec accepts: H != W catches swapped dimensions."""
    m = spec.size_multiple
    height = -(-at_least // m) * m
    return height, height + m


def random_images(n: int, channels: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, height, width, generator=generator) * 2 - 1   # in [-1, 1]


def n_params(name: str, values: dict | None = None) -> int:
    with torch.device("meta"):                      # shapes only: no 54 M-parameter init
        module = build(name, make_config(name, values))
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Registry contract


def test_every_registry_model_has_a_tiny_configuration() -> None:
    assert sorted(TINY) == sorted(MODELS)


def spec_inputs(spec, n: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """One random tensor per spec input, with its channel count, spanning its range."""
    inputs = {}
    for seed, tensor_spec in enumerate(spec.inputs, start=1):
        low, high = tensor_spec.range
        unit = (random_images(n, tensor_spec.shape[1], height, width, seed) + 1) / 2
        inputs[tensor_spec.name] = low + (high - low) * unit
    return inputs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_model_contract(name: str) -> None:
    model, spec = tiny_model(name)
    height, width = allowed_size(spec)
    spec.check_size(height, width)
    inputs = spec_inputs(spec, 2, height, width)
    with torch.no_grad():
        batched = model(**inputs)
        singles = [model(**{k: v[i:i + 1] for k, v in inputs.items()}) for i in range(2)]

    output_names = [o.name for o in spec.outputs]
    input_names = [i.name for i in spec.inputs]
    assert list(batched) == output_names
    assert not set(input_names) & set(output_names), "an output reuses an input name"
    assert input_names[0] == "image" and len(set(input_names)) == len(input_names)
    assert spec.inputs[0].shape == (-1, spec.channels, -1, -1)
    for tensor_spec in spec.inputs[1:]:         # images (lomit's exemplar) or masks (N, 1, H, W)
        assert tensor_spec.shape in ((-1, spec.channels, -1, -1), (-1, 1, -1, -1)), \
            tensor_spec.name
    for out in spec.outputs:
        y = batched[out.name]
        channels = out.shape[1]
        assert channels in (1, spec.channels), out.name
        assert y.shape == (2, channels, height, width), out.name
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()
        low, high = out.range
        assert y.min() >= low and y.max() <= high, out.name
        assert y.std() > 0, f"{out.name} is constant"
        single = torch.cat([s[out.name] for s in singles])
        torch.testing.assert_close(y, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_model_rejects_unknown_config_field(name: str) -> None:
    with pytest.raises(ValueError, match=rf"config fields \['bogus'\] are unknown to model "
                                         rf"'{name}'"):
        make_config(name, {"bogus": 1})


def test_pix2pix_train_mode_depends_on_the_batch() -> None:
    # Train-mode BatchNorm uses the batch's statistics: batching changes results. This is what
    # the eval-mode per-sample norm avoids. Dropout off, so BN is the only difference.
    config = make_config("pix2pix", {"ngf": 4, "depth": 5, "dropout": False})
    torch.manual_seed(0)
    model = build("pix2pix", config).train()
    images = random_images(2, 3, 32, 32)
    images[1] = images[1] * 0.3 + 0.5                # a second image with other statistics
    with torch.no_grad():
        batched = model(images)["translation"]
        single = torch.cat([model(images[i:i + 1])["translation"] for i in range(2)])
        model.eval()
        eval_batched = model(images)["translation"]
    assert (batched - single).abs().max() > 1e-2
    torch.testing.assert_close(eval_batched, single, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Parameter counts (REFERENCE.md section 1)


@pytest.mark.parametrize("name", ["additive", "cyclegan", "cut"])
def test_resnet_generator_parameter_counts(name: str) -> None:
    assert n_params(name) == 11_378_179
    assert n_params(name, {"n_blocks": 6}) == 7_837_699


def test_pix2pix_unet_256_parameter_count() -> None:
    assert n_params("pix2pix") == 54_413_955          # "54.4 M" in REFERENCE.md


# ---------------------------------------------------------------------------------------------
# Additive


def test_additive_strength_zero_returns_the_input_exactly() -> None:
    torch.manual_seed(0)
    model = build("additive", make_config("additive", {"ngf": 4, "n_blocks": 1,
                                                       "strength": 0.0})).eval()
    images = random_images(2, 3, 16, 16)
    with torch.no_grad():
        out = model(images)
    assert out["mask"].abs().max() > 0                # the mask is not itself zero
    assert torch.equal(out["translation"], images)


def test_additive_translation_is_clamped_input_plus_scaled_mask() -> None:
    torch.manual_seed(0)
    model = build("additive", make_config("additive", {"ngf": 4, "n_blocks": 1,
                                                       "strength": 0.5})).eval()
    images = random_images(2, 3, 16, 16)
    with torch.no_grad():
        out = model(images)
        mask = model.generator(images)                # the raw generator, called separately
    torch.testing.assert_close(out["mask"], mask, atol=0, rtol=0)
    assert mask.min() >= -1 and mask.max() <= 1
    raw = images + 0.5 * mask
    assert ((raw > 1) | (raw < -1)).any(), "test input never exercises the clamp"
    expected = torch.where(raw > 1, torch.ones_like(raw), torch.where(raw < -1, -1.0, raw))
    torch.testing.assert_close(out["translation"], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# pix2pix


def test_pix2pix_eval_equals_train_mode_batchnorm_at_batch_one() -> None:
    config = make_config("pix2pix", {"ngf": 4, "depth": 5, "dropout": False})
    torch.manual_seed(0)
    model = build("pix2pix", config)
    # Non-trivial BN affine and running stats: eval must use the affine but not the stats.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 1)
                module.running_var.uniform_(0.5, 2)
    image = random_images(1, 3, 32, 32)
    with torch.no_grad():
        evaluated = model.eval()(image)["translation"]
        trained = model.train()(image)["translation"]
    assert evaluated.abs().max() > 0
    torch.testing.assert_close(evaluated, trained, atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth, n_dropout", [(8, 3), (7, 2), (6, 1), (5, 0)])
def test_pix2pix_dropout_sits_in_the_inner_up_blocks(depth: int, n_dropout: int) -> None:
    # Reference U-Net: dropout after the up blocks of the num_downs - 5 levels just outside the
    # innermost, whose ConvTranspose maps 16 ngf -> 8 ngf (unet_256: 3 blocks). Trace call order.
    ngf = 1
    model = build("pix2pix", make_config("pix2pix", {"ngf": ngf, "depth": depth})).eval()
    calls: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.Dropout)):
            m.register_forward_hook(lambda module, args, out: calls.append(module))
    with torch.no_grad():
        model(torch.zeros(1, 3, 2 ** depth, 2 ** depth))
    after = [calls[i - 1] for i, m in enumerate(calls) if isinstance(m, nn.Dropout)]
    assert len(after) == n_dropout
    for conv in after:
        assert isinstance(conv, nn.ConvTranspose2d)
        assert (conv.in_channels, conv.out_channels) == (16 * ngf, 8 * ngf)


def test_pix2pix_keep_dropout_makes_calls_stochastic() -> None:
    config = make_config("pix2pix", {"ngf": 4, "depth": 6, "dropout": True})
    torch.manual_seed(0)
    model = build("pix2pix", config).eval()
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    image = random_images(1, 3, 64, 64)
    with torch.no_grad():
        first, second = model(image)["translation"], model(image)["translation"]
        assert torch.equal(first, second)
        model.keep_dropout()
        third, fourth = model(image)["translation"], model(image)["translation"]
    assert (third - fourth).abs().max() > 1e-4
    # keep_dropout leaves the norms in eval mode: only dropout is stochastic.
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# ---------------------------------------------------------------------------------------------
# Sizes


def test_additive_rejects_a_size_that_is_not_a_multiple_of_four() -> None:
    spec = get_entry("additive").spec(make_config("additive"))
    spec.check_size(32, 32)
    with pytest.raises(ValueError, match=r"30x32 is not supported.*multiples of 4.*try 32x32"):
        spec.check_size(30, 32)
    with pytest.raises(ValueError, match=r"32x30 is not supported.*multiples of 4"):
        spec.check_size(32, 30)


def test_pix2pix_depth_8_needs_multiples_of_256() -> None:
    spec = get_entry("pix2pix").spec(make_config("pix2pix", {"depth": 8}))
    with pytest.raises(ValueError, match=r"128x128 is not supported.*multiples of 256"):
        spec.check_size(128, 128)
    spec.check_size(256, 256)
    spec.check_size(256, 512)


# ---------------------------------------------------------------------------------------------
# Unknown model


def test_unknown_model_suggests_the_close_name_and_lists_the_known_ones() -> None:
    known = ", ".join(MODELS)
    with pytest.raises(UnknownModelError,
                       match=rf"unknown model 'adittive' \(did you mean 'additive'\?\); "
                             rf"known: {known}"):
        build("adittive")
    with pytest.raises(UnknownModelError, match=r"unknown model 'zzz'; known: "):
        make_config("zzz")


# ---------------------------------------------------------------------------------------------
# Discriminators


def test_patchgan_70_gives_30x30_at_256() -> None:
    torch.manual_seed(0)
    disc = PatchGAN(in_channels=3, ndf=8, n_layers=3)
    with torch.no_grad():
        out = disc(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)


def test_dcgan64_gives_one_logit_at_64_and_refuses_32() -> None:
    torch.manual_seed(0)
    disc = DCGAN64(in_channels=3, ndf=8).eval()
    with torch.no_grad():
        assert disc(torch.randn(2, 3, 64, 64)).shape == (2, 1, 1, 1)
        with pytest.raises(ValueError, match=r"DCGAN64 takes 64x64 images, got \(32, 32\)"):
            disc(torch.randn(2, 3, 32, 32))
