"""Tests for the Mask CycleGAN translator: its composition, the all-ones (CycleGAN) and all-zeros
masks, the clamp, the spec, the mask checks and their behaviour under torch.export."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from i2i.models import build, get_entry, make_config
from i2i.models.maskcyclegan import MaskCycleGANTranslator

TINY = {"ngf": 4, "n_blocks": 2}
N, C, H, W = 2, 3, 16, 20                     # H != W catches swapped dimensions


def tiny(seed: int = 0) -> MaskCycleGANTranslator:
    torch.manual_seed(seed)
    return build("maskcyclegan", make_config("maskcyclegan", TINY)).eval()


def images(seed: int = 1, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, H, W, generator=g) * 2 - 1 + 0.1       # non-zero mean, in [-1, 1.1]


def binary_mask(seed: int = 2, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, H, W, generator=g) < 0.5).float()


def conv1x1(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias)


# ---------------------------------------------------------------------------------------------
# Composition


def test_output_is_generator_of_masked_part_plus_context_path() -> None:
    model = tiny()
    x, m = images().clamp(-1, 1), binary_mask()
    m3 = torch.cat([m, m, m], dim=1)                                   # the mask per channel
    with torch.no_grad():
        masked_in = conv1x1(torch.cat([x * m3, m3], dim=1), model.mask_encoder)
        context = conv1x1(torch.cat([x * (1 - m3), 1 - m3], dim=1), model.context_encoder)
        expected = model.generator(masked_in) + context
        raw = model.raw(x, m)
        out = model(x, m)
    assert list(out) == ["translation"]
    torch.testing.assert_close(raw, expected, atol=0, rtol=0)
    torch.testing.assert_close(out["translation"], expected.clamp(-1, 1), atol=0, rtol=0)


def test_generator_sees_only_the_masked_pixels() -> None:
    model = tiny()
    with torch.no_grad():
        model.context_encoder.weight.zero_()
        model.context_encoder.bias.zero_()
    x, m = images(), binary_mask()
    outside = x + 0.5 * (1 - m)                 # changed only where the mask is 0
    inside = x + 0.5 * m                        # changed only where the mask is 1
    with torch.no_grad():
        base, same, other = model.raw(x, m), model.raw(outside, m), model.raw(inside, m)
    torch.testing.assert_close(same, base, atol=0, rtol=0)
    assert (other - base).abs().max() > 1e-3


def test_each_image_has_its_own_mask() -> None:
    model = tiny()
    x = images(n=1).expand(2, -1, -1, -1)                              # the same image twice
    m = torch.stack([binary_mask(seed=3, n=1)[0], binary_mask(seed=4, n=1)[0]])
    with torch.no_grad():
        out = model(x, m)["translation"]
        alone = model(x[1:], m[1:])["translation"]
    assert (out[0] - out[1]).abs().max() > 1e-3
    # batch of 2 vs 1: other conv blockings, as in the registry contract test of test_models.py
    torch.testing.assert_close(out[1:], alone, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# All-ones and all-zeros masks


def test_all_ones_mask_with_pass_through_encoders_is_the_cyclegan_generator() -> None:
    model = tiny()
    torch.manual_seed(5)
    cyclegan = build("cyclegan", make_config("cyclegan", TINY)).eval()
    model.generator.load_state_dict(cyclegan.generator.state_dict())
    with torch.no_grad():
        weight = torch.zeros(C, 2 * C, 1, 1)
        weight[:, :C, 0, 0] = torch.eye(C)      # E_m: x * m passes, the mask half is dropped
        model.mask_encoder.weight.copy_(weight)
        model.mask_encoder.bias.zero_()
        model.context_encoder.weight.zero_()
        model.context_encoder.bias.zero_()
        x = images().clamp(-1, 1)
        ones = torch.ones(N, 1, H, W)
        expected = cyclegan(x)["translation"]
        assert expected.std() > 0.01
        torch.testing.assert_close(model(x, ones)["translation"], expected, atol=0, rtol=0)
        torch.testing.assert_close(model.raw(x, ones), expected, atol=0, rtol=0)


def test_all_zeros_mask_gives_the_context_path_plus_a_fixed_generator_image() -> None:
    # Documented: G's input is the constant image of E_m's bias, whatever the image.
    model = tiny()
    zeros = torch.zeros(N, 1, H, W)
    with torch.no_grad():
        bias_image = model.mask_encoder.bias.view(1, C, 1, 1).expand(N, C, H, W)
        fixed = model.generator(bias_image.contiguous())
        for seed in (1, 7):
            x = images(seed)
            context = conv1x1(torch.cat([x, torch.ones_like(x)], dim=1), model.context_encoder)
            torch.testing.assert_close(model.raw(x, zeros), context + fixed, atol=0, rtol=0)
        first, second = model.raw(images(1), zeros), model.raw(images(7), zeros)
    assert (first - second).abs().max() > 1e-2   # the context path still follows the image


# ---------------------------------------------------------------------------------------------
# Clamp


def test_forward_clamps_and_raw_is_unbounded() -> None:
    model = tiny()
    with torch.no_grad():
        model.context_encoder.bias.fill_(1.5)   # the context term is added after G's tanh
        x, m = images(), binary_mask()
        raw = model.raw(x, m)
        out = model(x, m)["translation"]
    assert raw.max() > 1
    assert out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, torch.where(raw > 1, 1.0, torch.where(raw < -1, -1.0, raw)),
                               atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# Spec and size


def test_spec_names_the_image_and_mask_inputs() -> None:
    spec = get_entry("maskcyclegan").spec(make_config("maskcyclegan", {"channels": 3}))
    assert [(t.name, t.shape, t.range) for t in spec.inputs] == [
        ("image", (-1, 3, -1, -1), (-1.0, 1.0)), ("mask", (-1, 1, -1, -1), (0.0, 1.0))]
    assert [(t.name, t.shape, t.range) for t in spec.outputs] == [
        ("translation", (-1, 3, -1, -1), (-1.0, 1.0))]
    assert spec.size_multiple == 4
    with pytest.raises(ValueError, match=r"18x20 is not supported.*multiples of 4"):
        spec.check_size(18, 20)


def test_parameter_count_is_the_resnet_generator_plus_two_1x1_encoders() -> None:
    with torch.device("meta"):
        model = build("maskcyclegan", make_config("maskcyclegan"))
    # 11,378,179 (REFERENCE.md) + 2 x (6 x 3 weights + 3 biases)
    assert sum(p.numel() for p in model.parameters()) == 11_378_179 + 42


# ---------------------------------------------------------------------------------------------
# Mask checks


@pytest.mark.parametrize("shape", [(N, 3, H, W), (1, 1, H, W), (N, 1, H, H), (N, 1, W, H),
                                   (N, H, W), (N, 1, H, W, 1)])
def test_mask_of_the_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    model = tiny()
    expected = (f"mask must have shape (N, 1, H, W) = ({N}, 1, {H}, {W}) to match the image of "
                f"shape ({N}, {C}, {H}, {W}); got {shape}")
    with pytest.raises(ValueError, match=re.escape(expected)):
        model(images(), torch.zeros(shape))


def test_image_that_is_not_4d_is_refused() -> None:
    with pytest.raises(ValueError, match=r"image must be an \(N, C, H, W\) tensor, got shape "
                                         r"\(3, 16, 20\)"):
        tiny()(images()[0], torch.zeros(1, H, W))


@pytest.mark.parametrize("bad, shown", [(1.5, r"min 0, max 1\.5"), (-0.25, r"min -0\.25, max 1"),
                                        (float("nan"), r"nan")])
def test_mask_values_outside_0_1_are_refused(bad: float, shown: str) -> None:
    model = tiny()
    mask = binary_mask()
    mask[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=rf"mask values must lie in \[0, 1\].*{shown}"):
        model(images(), mask)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        model.raw(images(), mask)


def test_soft_mask_values_inside_0_1_are_accepted() -> None:
    g = torch.Generator().manual_seed(3)
    out = tiny()(images(), torch.rand(N, 1, H, W, generator=g))["translation"]
    assert out.shape == (N, C, H, W)


def test_value_check_is_skipped_inside_an_exported_graph() -> None:
    model = tiny()
    x, m = images().clamp(-1, 1), binary_mask()

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(image, mask)["translation"]

    batch = torch.export.Dim("batch", min=1, max=8)
    shapes = ({0: batch}, {0: batch})
    program = torch.export.export(Positional(), (x, m), dynamic_shapes=shapes)
    exported = program.module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x, m), model(x, m)["translation"], atol=1e-6,
                                   rtol=0)
        exported(x[:1], m[:1] * 2)                     # out of range: no check in the graph
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        model(x[:1], m[:1] * 2)
