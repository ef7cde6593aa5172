"""What only a GPU can check: the kernels on CUDA in a whole generator, fp16, and the split
path chosen for few rows. Skipped, with the reason, on machines without CUDA."""

from __future__ import annotations

import pytest
import torch

from i2i.kernels import _norm, use_fused_kernels
from i2i.kernels.instance_norm_act import instance_norm_act_reference, launch_instance_norm_act
from i2i.models import build, make_config

from .tolerances import assert_kernel_close

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA device")]


def test_fused_fp16_generator_on_cuda_matches_fp32_eager():
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 32, "n_blocks": 6})
    eager = build("additive", config).cuda().eval()
    fused = use_fused_kernels(build("additive", config).cuda().eval())
    fused.load_state_dict(eager.state_dict())
    x = torch.rand(4, 3, 128, 128, device="cuda") * 2 - 1
    with torch.no_grad():
        want = eager(x)
        got = fused.half()(x.half())
    for key in want:
        err = (got[key].float() - want[key]).abs().max().item()
        assert err < 2e-2, (key, err)


def test_few_rows_take_the_split_path_and_stay_exact():
    x = torch.randn(1, 4, 128, 128, device="cuda") + 2
    assert _norm._split_plan(4, 128 * 128, x, None, None) is not None
    out = launch_instance_norm_act(x, relu=True)
    truth = instance_norm_act_reference(x.double(), relu=True, compute_dtype=torch.float64)
    same = instance_norm_act_reference(x, relu=True, compute_dtype=None)
    assert_kernel_close(out, same, truth, torch.float32, "cuda split")
