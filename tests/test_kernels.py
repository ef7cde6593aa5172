"""The three Triton kernels against fp64 references, through the interpreter on the CPU (or on
the GPU where there is one): odd shapes, every dtype, both memory layouts, both norm paths.
Tolerances come from tests/tolerances.py alone."""

from __future__ import annotations

import pytest
import torch

from i2i.kernels import (
    add_mask_clamp_reference,
    instance_norm_act_reference,
    instance_norm_hadain_reference,
)
from i2i.kernels._triton import runs_triton
from i2i.kernels.add_mask_clamp import launch_add_mask_clamp
from i2i.kernels.instance_norm_act import launch_instance_norm_act
from i2i.kernels.instance_norm_hadain import launch_instance_norm_hadain

from .tolerances import assert_kernel_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(1, 1, 1, 3), (2, 3, 5, 7), (2, 4, 33, 31), (1, 2, 67, 91),
          (1, 1, 256, 256)]                               # the last one takes the split path
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (chunk, block) that force the split path with several chunks and several tiles per chunk.
FORCED_SPLITS = [((2, 3, 5, 7), 16, 8), ((2, 4, 33, 31), 256, 64), ((1, 2, 67, 91), 1024, 512)]


@pytest.fixture(autouse=True, scope="module")
def kernels_really_run():
    # Without this the ops would fall back to the references and compare them with themselves.
    assert runs_triton(torch.empty(1, device=DEVICE)), \
        "kernel tests need triton and, on the CPU, TRITON_INTERPRET=1 (tests/conftest.py)"


def rand(shape, dtype, scale=2.0, shift=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale + shift).to(DEVICE, dtype)


def act_case(x, affine, relu, residual, **launch):
    C = x.shape[1]
    w = rand((C,), x.dtype, 1.0, 1.0, 1) if affine else None
    b = rand((C,), x.dtype, 1.0, 0.0, 2) if affine else None
    r = rand(tuple(x.shape), x.dtype, 1.0, 0.0, 3) if residual else None
    out = launch_instance_norm_act(x, w, b, r, relu, **launch)
    same = instance_norm_act_reference(x, w, b, r, relu, compute_dtype=None)
    d = [t.double() if t is not None else None for t in (x, w, b, r)]
    truth = instance_norm_act_reference(*d, relu, compute_dtype=torch.float64)
    return out, same, truth


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_instance_norm_act_every_epilogue(shape, dtype):
    x = rand(shape, dtype)
    for affine in (False, True):
        for relu in (False, True):
            for residual in (False, True):
                out, same, truth = act_case(x, affine, relu, residual)
                assert out.dtype == dtype and out.shape == x.shape
                assert_kernel_close(out, same, truth, dtype,
                                    f"{shape} affine={affine} relu={relu} res={residual}")


@pytest.mark.parametrize("shape,chunk,block", FORCED_SPLITS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_split_path_at_odd_sizes(shape, chunk, block, dtype):
    x = rand(shape, dtype)
    out, same, truth = act_case(x, True, True, True, chunk=chunk, block=block)
    assert_kernel_close(out, same, truth, dtype, f"split {shape}")
    mask = (rand((shape[0], 1, *shape[2:]), torch.float32, 1, 0, 4) > 0).to(dtype)
    styles = [rand(shape[:2], dtype, 1.0, 0.5, 5 + i) for i in range(4)]
    out = launch_instance_norm_hadain(x, mask, *styles, chunk=chunk, block=block)
    same = instance_norm_hadain_reference(x, mask, *styles, compute_dtype=None)
    truth = instance_norm_hadain_reference(x.double(), mask.double(),
                                           *[s.double() for s in styles],
                                           compute_dtype=torch.float64)
    assert_kernel_close(out, same, truth, dtype, f"hadain split {shape}")


@pytest.mark.parametrize("split", [None, (256, 64)])
def test_large_mean_small_variance(split):
    chunk, block = split or (None, None)
    x = rand((2, 3, 33, 31), torch.float32, scale=0.1, shift=1000.0)
    out, same, truth = act_case(x, False, False, False, chunk=chunk, block=block)
    assert_kernel_close(out, same, truth, torch.float32, "mean 1000, std 0.1")
    # Stricter than the rule: the row shift keeps this near fp32 rounding of the output.
    assert (out.double() - truth).abs().max().item() < 1e-5


@pytest.mark.parametrize("split", [None, (256, 64)])
def test_fp16_activations_scaled_by_300(split):
    chunk, block = split or (None, None)
    x = rand((2, 4, 33, 31), torch.float16, scale=300.0, shift=0.0)
    out, same, truth = act_case(x, True, True, False, chunk=chunk, block=block)
    assert torch.isfinite(out).all()
    assert_kernel_close(out, same, truth, torch.float16, "x300 fp16")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_last_and_strided_inputs(dtype):
    x = rand((2, 4, 33, 31), dtype).contiguous(memory_format=torch.channels_last)
    out, same, truth = act_case(x, True, True, True)    # residual stays NCHW-contiguous
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_kernel_close(out, same, truth, dtype, "channels_last")
    sliced = rand((2, 4, 66, 31), dtype)[:, :, ::2]        # a non-dense view
    out, same, truth = act_case(sliced, True, False, False)
    assert_kernel_close(out, same, truth, dtype, "strided view")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_instance_norm_hadain(shape, dtype):
    N, C, H, W = shape
    x = rand(shape, dtype)
    styles = [rand((N, C), dtype, 1.0, 0.5, 5 + i) for i in range(4)]
    soft = torch.rand((N, 1, H, W), generator=torch.Generator().manual_seed(9)).to(DEVICE, dtype)
    for name, mask in (("soft", soft), ("zeros", torch.zeros_like(soft)),
                       ("ones", torch.ones_like(soft)), ("binary", (soft > 0.5).to(dtype))):
        out = launch_instance_norm_hadain(x, mask, *styles)
        same = instance_norm_hadain_reference(x, mask, *styles, compute_dtype=None)
        truth = instance_norm_hadain_reference(x.double(), mask.double(),
                                               *[s.double() for s in styles],
                                               compute_dtype=torch.float64)
        assert_kernel_close(out, same, truth, dtype, f"hadain {name} {shape}")


def test_hadain_masks_at_0_and_1_pick_one_style_exactly():
    x = rand((2, 3, 9, 11), torch.float32)
    gf, bf, gb, bb = [rand((2, 3), torch.float32, 1.0, 0.5, 5 + i) for i in range(4)]
    ones = torch.ones((2, 1, 9, 11), device=DEVICE)
    fg_only = launch_instance_norm_hadain(x, ones, gf, bf, gb, bb)
    affine = launch_instance_norm_act(x, relu=False)
    expected = affine * gf[:, :, None, None] + bf[:, :, None, None]
    torch.testing.assert_close(fg_only, expected, rtol=0, atol=2e-6)
    bg_only = launch_instance_norm_hadain(x, torch.zeros_like(ones), gf, bf, gb, bb)
    torch.testing.assert_close(bg_only, affine * gb[:, :, None, None] + bb[:, :, None, None],
                               rtol=0, atol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 3, 5, 7), (2, 3, 67, 91)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.filterwarnings("ignore:overflow encountered in exp")
def test_add_mask_clamp(shape, dtype):
    x = rand(shape, dtype, 0.8, 0.0)
    z = rand(shape, dtype, 4.0, 0.0, 1)
    z.view(-1)[:2] = torch.tensor([60.0, -60.0], dtype=dtype)   # saturates to exactly +-1
    for strength in (0.0, 0.5, 1.0):
        y, m = launch_add_mask_clamp(x, z, strength)
        y_same, m_same = add_mask_clamp_reference(x, z, strength, compute_dtype=None)
        y_true, m_true = add_mask_clamp_reference(x.double(), z.double(), strength,
                                                  compute_dtype=torch.float64)
        assert_kernel_close(y, y_same, y_true, dtype, f"y s={strength}")
        assert_kernel_close(m, m_same, m_true, dtype, f"m s={strength}")
        assert y.abs().max() <= 1.0
    assert m.view(-1)[0] == 1.0 and m.view(-1)[1] == -1.0
    y0, _ = launch_add_mask_clamp(x, z, 0.0)
    assert torch.equal(y0, x.clamp(-1, 1))


def test_add_mask_clamp_channels_last():
    x = rand((2, 3, 8, 8), torch.float32, 0.8, 0.0).contiguous(memory_format=torch.channels_last)
    z = rand((2, 3, 8, 8), torch.float32, 2.0, 0.0, 1).contiguous(
        memory_format=torch.channels_last)
    y, m = launch_add_mask_clamp(x, z, 1.0)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y_ref, m_ref = add_mask_clamp_reference(x, z, 1.0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(m, m_ref, rtol=0, atol=2e-6)


ROW_STRENGTHS = [0.0, 0.5, 1.7]     # one per row: nothing added, half the mask, more than it


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 1, 1, 3), (3, 3, 5, 7), (3, 2, 67, 91)],
                         ids=lambda s: "x".join(map(str, s)))
def test_add_mask_clamp_per_row_strength(shape, dtype, layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = rand(shape, dtype, 0.8, 0.0).contiguous(memory_format=fmt)
    z = rand(shape, dtype, 4.0, 0.0, 1).contiguous(memory_format=fmt)
    strength = torch.tensor(ROW_STRENGTHS, device=DEVICE)
    y, m = launch_add_mask_clamp(x, z, strength)
    assert y.is_contiguous(memory_format=fmt) and m.is_contiguous(memory_format=fmt)
    y_same, m_same = add_mask_clamp_reference(x, z, strength, compute_dtype=None)
    y_true, m_true = add_mask_clamp_reference(x.double(), z.double(), strength.double(),
                                              compute_dtype=torch.float64)
    assert_kernel_close(y, y_same, y_true, dtype, f"y per-row {layout}")
    assert_kernel_close(m, m_same, m_true, dtype, f"m per-row {layout}")
    assert y.abs().max() <= 1.0
    assert torch.equal(y[0], x[0].clamp(-1, 1))              # strength 0: the input, clamped
    # Each row is exactly what a whole-batch float strength gives that row alone: the kernel
    # picks the right row's strength in either layout, also where a block straddles rows.
    for i, s in enumerate(ROW_STRENGTHS):
        y_row, m_row = launch_add_mask_clamp(x[i:i + 1], z[i:i + 1], s)
        assert torch.equal(y[i:i + 1], y_row) and torch.equal(m[i:i + 1], m_row), (i, s)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_add_mask_clamp_float_strength_is_that_value_for_every_row(dtype):
    x = rand((3, 3, 5, 7), dtype, 0.8, 0.0)
    z = rand((3, 3, 5, 7), dtype, 4.0, 0.0, 1)
    full = torch.full((3,), 0.7, device=DEVICE)
    for compute_dtype in (None, torch.float32):
        by_float = add_mask_clamp_reference(x, z, 0.7, compute_dtype=compute_dtype)
        by_tensor = add_mask_clamp_reference(x, z, full, compute_dtype=compute_dtype)
        assert all(torch.equal(a, b) for a, b in zip(by_float, by_tensor, strict=True))
    by_float, by_tensor = launch_add_mask_clamp(x, z, 0.7), launch_add_mask_clamp(x, z, full)
    assert all(torch.equal(a, b) for a, b in zip(by_float, by_tensor, strict=True))


def test_empty_inputs_give_empty_outputs():
    x = torch.empty((0, 3, 4, 4), device=DEVICE)
    assert launch_instance_norm_act(x).shape == x.shape
    assert launch_add_mask_clamp(x, x.clone())[0].shape == x.shape


@pytest.mark.parametrize("call,message", [
    (lambda: launch_instance_norm_act(torch.randn(3, 4, 5)), r"x must be \(N, C, H, W\)"),
    (lambda: launch_instance_norm_act(torch.ones(1, 2, 3, 3, dtype=torch.int32)),
     "x must be float32, float16 or bfloat16"),
    (lambda: launch_instance_norm_act(torch.randn(1, 2, 3, 3), weight=torch.ones(3)),
     r"weight must have shape \(2,\)"),
    (lambda: launch_instance_norm_act(torch.randn(1, 2, 3, 3), residual=torch.ones(1, 2, 3, 4)),
     r"residual must have shape \(1, 2, 3, 3\)"),
    (lambda: launch_instance_norm_hadain(torch.randn(2, 2, 3, 3), torch.ones(2, 2, 3, 3),
                                         *[torch.ones(2, 2)] * 4),
     r"mask must have shape \(2, 1, 3, 3\)"),
    (lambda: launch_instance_norm_hadain(torch.randn(2, 2, 3, 3), torch.ones(2, 1, 3, 3),
                                         torch.ones(2), *[torch.ones(2, 2)] * 3),
     r"gamma_fg must have shape \(2, 2\)"),
    (lambda: launch_add_mask_clamp(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 5)),
     "same shape"),
    (lambda: launch_add_mask_clamp(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4).half()),
     "same dtype"),
    (lambda: launch_add_mask_clamp(
        torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4).contiguous(
            memory_format=torch.channels_last)), "both must be contiguous or both channels_last"),
    (lambda: launch_add_mask_clamp(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4),
                                   torch.ones(3, 1)), r"strength must have shape \(N,\) = \(3,\)"),
    (lambda: launch_add_mask_clamp(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4),
                                   torch.ones(2)), r"strength must have shape \(N,\) = \(3,\)"),
    (lambda: launch_add_mask_clamp(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4),
                                   torch.ones(3, dtype=torch.int64)),
     "strength must be a floating point tensor"),
    (lambda: launch_add_mask_clamp(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4),
                                   torch.ones(3, device="meta")),
     "strength is on meta but x is on"),
    (lambda: add_mask_clamp_reference(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4),
                                      torch.ones(4)), r"strength must have shape \(N,\)"),
])
def test_unsupported_inputs_are_rejected_clearly(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
