"""Pixel accuracy, PSNR and SSIM against answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from i2i.eval.paired import PairedTotals, PairError, pixel_accuracy, psnr, ssim


def picture(value: int, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.full((3, h, w), value, dtype=torch.uint8)


def test_pixel_accuracy_counts_pixels_within_the_tolerance_in_every_channel():
    target = picture(100, 8, 8)
    generated = target.clone()
    generated[0, :4] += 16                     # half the rows: red off by 16 (still right)
    generated[2, 6:] -= 17                     # a quarter: blue off by 17 (wrong)
    assert pixel_accuracy(generated, target, tolerance=16) == pytest.approx(0.75)
    assert pixel_accuracy(generated, target, tolerance=17) == pytest.approx(1.0)
    assert pixel_accuracy(generated, target, tolerance=15) == pytest.approx(0.25)


def test_psnr_of_a_known_error_and_of_equal_pictures():
    assert psnr(picture(110), picture(100)) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert psnr(picture(100), picture(100)) == math.inf


def test_ssim_of_flat_pictures_is_the_luminance_term():
    # No variance: the contrast-structure term is C2 / C2 = 1.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1)
    assert ssim(picture(100), picture(120)) == pytest.approx(expected, rel=1e-12)


def test_ssim_of_one_11x11_window_computed_directly():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 11, 11))
    y = np.clip(x + rng.integers(-40, 41, (3, 11, 11)), 0, 255)
    offsets = np.arange(11) - 5
    g = np.exp(-offsets ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    per_channel = []
    for a, b in zip(x.astype(float), y.astype(float), strict=True):
        ma, mb = (w * a).sum(), (w * b).sum()
        va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
        cov = (w * (a - ma) * (b - mb)).sum()
        per_channel.append((2 * ma * mb + c1) * (2 * cov + c2)
                           / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    got = ssim(torch.from_numpy(x).to(torch.uint8), torch.from_numpy(y).to(torch.uint8))
    assert got == pytest.approx(np.mean(per_channel), rel=1e-9)
    assert got < 0.99


def test_equal_pictures_score_one_and_totals_average_per_picture():
    noise = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 16, 16))).to(
        torch.uint8)
    totals = PairedTotals(tolerance=16)
    totals.add(noise, noise, "same")
    totals.add(picture(110), picture(100), "off")
    means = totals.means()
    assert means["pairs"] == 2 and means["tolerance"] == 16
    assert means["pixel_accuracy"] == pytest.approx(1.0)
    assert means["ssim"] == pytest.approx((1.0 + ssim(picture(110), picture(100))) / 2)
    assert PairedTotals().means() is None


def test_pairs_of_other_sizes_and_pictures_under_11_pixels_are_refused():
    with pytest.raises(PairError, match="cat: the generated picture is 16x16 and its target "
                                        "20x16; paired metrics compare pictures of one size"):
        PairedTotals().add(picture(0), picture(0, 16, 20), "cat")
    with pytest.raises(PairError, match="SSIM's 11x11 window needs pictures of at least 11x11 "
                                        "pixels, got 12x10"):
        ssim(picture(0, 10, 12), picture(0, 10, 12))
