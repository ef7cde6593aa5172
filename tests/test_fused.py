"""The kernels as ops inside models: opcheck, swapped generators, torch.compile, ONNX export."""

from __future__ import annotations

import pytest
import torch

from i2i.kernels import ONNX_TRANSLATIONS, use_fused_kernels
from i2i.kernels._triton import runs_triton
from i2i.models import build, make_config

from .tolerances import assert_kernel_close

TINY = {"additive": {"ngf": 4, "n_blocks": 2}, "cyclegan": {"ngf": 4, "n_blocks": 2}}


def generator(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, make_config(name, TINY[name])).eval()


def image(n=2, size=20, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


def test_the_ops_pass_opcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g) + 1
    w, b = torch.randn(3, generator=g), torch.randn(3, generator=g)
    torch.library.opcheck(torch.ops.i2i.instance_norm_act.default, (x, w, b, x.clone()),
                          {"relu": True, "eps": 1e-5})
    torch.library.opcheck(torch.ops.i2i.instance_norm_act.default, (x,), {"relu": False})
    mask = torch.rand(2, 1, 5, 7, generator=g)
    styles = [torch.randn(2, 3, generator=g) for _ in range(4)]
    torch.library.opcheck(torch.ops.i2i.instance_norm_hadain.default, (x, mask, *styles))
    torch.library.opcheck(torch.ops.i2i.add_mask_clamp.default, (x, x * 3, 0.5))


@pytest.mark.parametrize("name", sorted(TINY))
def test_swapped_generator_gives_the_same_translations(name):
    assert runs_triton(torch.empty(1)), "the fused model must run the kernels, not references"
    eager = generator(name)
    fused = use_fused_kernels(generator(name))
    # stem + 2 down + one per residual block + 2 up (+ the output step of additive)
    assert fused.fused_kernels == 1 + 2 + 2 + 2 + (1 if name == "additive" else 0)
    x = image()
    with torch.no_grad():
        want = eager(x)
        got = fused(x)
        truth = generator(name).double()(x.double())
    assert set(got) == set(want)
    for key in want:
        assert_kernel_close(got[key], want[key], truth[key], torch.float32, f"{name} {key}")
    # Same parameters, same keys: a checkpoint of one loads into the other.
    assert fused.state_dict().keys() == eager.state_dict().keys()


def test_swapped_maskcyclegan_gives_the_same_translations():
    torch.manual_seed(0)
    config = make_config("maskcyclegan", {"ngf": 4, "n_blocks": 2})
    eager = build("maskcyclegan", config).eval()
    fused = use_fused_kernels(build("maskcyclegan", config).eval())
    fused.load_state_dict(eager.state_dict())
    assert fused.fused_kernels == 1 + 2 + 2 + 2       # its ResNet generator's norm steps
    x = image()
    mask = torch.zeros(2, 1, 20, 20)
    mask[0, :, 4:16, 4:16] = 1
    mask[1, :, :10] = 1
    with torch.no_grad():
        want = eager(x, mask)["translation"]
        got = fused(x, mask)["translation"]
        truth = eager.double()(x.double(), mask.double())["translation"]
    assert_kernel_close(got, want, truth, torch.float32, "maskcyclegan translation")


def test_use_fused_kernels_refuses_a_model_with_nothing_to_fuse():
    with pytest.raises(ValueError, match="found nothing to fuse in Linear"):
        use_fused_kernels(torch.nn.Linear(2, 2))


def test_compiled_swapped_generator_matches_eager():
    fused = use_fused_kernels(generator("additive"))
    compiled = torch.compile(fused, fullgraph=True)
    x = image()
    with torch.no_grad():
        got, want = compiled(x), fused(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-5)


def test_onnx_export_of_swapped_generator_uses_standard_ops_and_matches():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    fused = use_fused_kernels(generator("additive"))
    x = image()
    program = torch.onnx.export(fused, (x,), dynamo=True, opset_version=18,
                                custom_translation_table=ONNX_TRANSLATIONS,
                                input_names=["image"], output_names=["translation", "mask"],
                                verbose=False)
    model = program.model_proto
    domains = {node.domain for node in model.graph.node}
    ops = {node.op_type for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    assert {"InstanceNormalization", "Tanh", "Clip"} <= ops
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    translation, mask = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = generator("additive")(x)
    assert abs(torch.from_numpy(translation) - want["translation"]).max() < 1e-4
    assert abs(torch.from_numpy(mask) - want["mask"]).max() < 1e-4


def test_without_the_interpreter_cpu_calls_run_the_reference(tmp_path):
    """The op's CPU route when TRITON_INTERPRET is off: the torch reference, bit for bit."""
    import subprocess
    import sys
    script = (
        "import torch\n"
        "from i2i.kernels import instance_norm_act_reference\n"
        "from i2i.kernels._triton import runs_triton\n"
        "x = torch.randn(2, 3, 5, 7) + 1\n"
        "assert not runs_triton(x)\n"
        "out = torch.ops.i2i.instance_norm_act(x, relu=True)\n"
        "assert torch.equal(out, instance_norm_act_reference(x, relu=True))\n"
        "print('reference')\n")
    env = {**__import__("os").environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reference"
