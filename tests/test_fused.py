"""The kernels as ops inside models: opcheck, swapped generators, torch.compile, ONNX export."""

from __future__ import annotations

import pytest
import torch

from i2i.kernels import ONNX_TRANSLATIONS, add_mask_clamp_reference, use_fused_kernels
from i2i.kernels._triton import runs_triton
from i2i.kernels.fuse import FusedAddMask
from i2i.models import build, make_config

from .tolerances import assert_kernel_close

TINY = {"additive": {"ngf": 4, "n_blocks": 2}, "cyclegan": {"ngf": 4, "n_blocks": 2},
        "cut": {"ngf": 4, "n_blocks": 2}}


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
    # strength is a tensor in the op's schema, one value per row (a float is only taken by the
    # Python launcher, reference and FusedAddMask)
    torch.library.opcheck(torch.ops.i2i.add_mask_clamp.default, (x, x * 3, torch.full((2,), 0.5)))
    torch.library.opcheck(torch.ops.i2i.add_mask_clamp.default,
                          (x, x * 3, torch.tensor([0.0, 1.7])))
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.i2i.add_mask_clamp.default,
                          (cl, cl * 3, torch.tensor([1.7, 0.5])))


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


class AddMaskClampOp(torch.nn.Module):
    """The op alone, with strength as a model input (one value per request)."""

    def forward(self, x, z, strength):
        return torch.ops.i2i.add_mask_clamp(x, z, strength)


def mask_inputs(n=3, size=(5, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, *size), generator=g) * 2 - 1
    z = torch.randn((n, 3, *size), generator=g) * 3
    strength = torch.tensor([0.0, 0.5, 1.7, 1.0, 0.25][:n])
    return x, z, strength


def reference_close(got, x, z, strength, what):
    same = add_mask_clamp_reference(x, z, strength, compute_dtype=None)
    truth = add_mask_clamp_reference(x.double(), z.double(), strength.double(),
                                     compute_dtype=torch.float64)
    for out, s, t, name in zip(got, same, truth, ("y", "m"), strict=True):
        assert_kernel_close(out, s, t, torch.float32, f"{what} {name}")


@pytest.mark.parametrize("form", ["float", "(N, 1)", "(N,)", "(N, 1) float64"])
def test_fused_add_mask_takes_a_float_or_one_strength_per_row(form):
    x, z, strength = mask_inputs()
    arg = {"float": 0.5, "(N, 1)": strength[:, None], "(N,)": strength,
           "(N, 1) float64": strength[:, None].double()}[form]
    want = torch.full((3,), 0.5) if form == "float" else strength
    with torch.no_grad():
        got = FusedAddMask()(x, z, arg)
    reference_close(got, x, z, want, form)


@pytest.mark.parametrize("bad", [torch.ones(1, 3), torch.ones(3, 2), torch.ones(3, 1, 1),
                                 torch.ones(2, 1)], ids=lambda t: str(tuple(t.shape)))
def test_fused_add_mask_rejects_strengths_not_one_per_row(bad):
    x, z, _ = mask_inputs()
    with pytest.raises(ValueError, match="strength must"):
        FusedAddMask()(x, z, bad)


def test_compiled_op_with_a_strength_input_matches_eager():
    module = AddMaskClampOp()
    compiled = torch.compile(module, fullgraph=True)
    for n in (3, 2):                                     # a second batch size recompiles
        x, z, strength = mask_inputs(n)
        with torch.no_grad():
            got = compiled(x, z, strength)
            want = module(x, z, strength)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        reference_close(got, x, z, strength, f"compiled n={n}")


def test_onnx_export_of_the_op_with_a_strength_input_matches():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x, z, strength = mask_inputs()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.onnx.export(AddMaskClampOp().eval(), (x, z, strength), dynamo=True,
                                opset_version=18, custom_translation_table=ONNX_TRANSLATIONS,
                                input_names=["x", "z", "strength"], output_names=["y", "m"],
                                dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                                verbose=False)
    model = program.model_proto
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert {"Tanh", "Clip", "Reshape"} <= {node.op_type for node in model.graph.node}
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for n in (3, 5):                                    # the batch dimension stays dynamic
        x, z, strength = mask_inputs(n, seed=n)
        y, m = session.run(None, {"x": x.numpy(), "z": z.numpy(), "strength": strength.numpy()})
        reference_close((torch.from_numpy(y), torch.from_numpy(m)), x, z, strength,
                        f"onnxruntime n={n}")


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
        "from i2i.kernels import add_mask_clamp_reference\n"
        "s = torch.tensor([0.0, 1.7])\n"
        "got = torch.ops.i2i.add_mask_clamp(x, x * 3, s)\n"
        "assert all(map(torch.equal, got, add_mask_clamp_reference(x, x * 3, s)))\n"
        "print('reference')\n")
    env = {**__import__("os").environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reference"
