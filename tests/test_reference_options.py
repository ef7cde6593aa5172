"""Reference import options the weights cannot tell, or that must agree with them: --eval (batch
norm's running statistics), --norm, input/output channels (grey <-> colour), --direction; each
checked against the reference-layout nets of test_reference_import in the reference's own test
modes, then exported with defaults through the parity gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.export import ExportOptions, build, read_manifest
from i2i.kernels.fuse import use_fused_kernels
from i2i.models import CheckpointError, load, read_document
from i2i.models.reference import import_reference

from .test_reference_import import (
    RefResnetGenerator,
    RefUnetGenerator,
    randomise,
    run_cli,
    save_reference,
)


def images(n: int, channels: int, size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator) * 2 - 1


def unet(tmp_path: Path, dropout: bool, kind: str = "batch", depth: int = 6, in_nc: int = 3,
         out_nc: int = 3, name: str = "latest_net_G.pth") -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    ref = randomise(RefUnetGenerator(in_nc, out_nc, num_downs=depth, ngf=4, dropout=dropout,
                                     kind=kind))
    return ref, save_reference(ref, tmp_path, name)


def resnet(tmp_path: Path, kind: str = "instance", in_nc: int = 3, out_nc: int = 3,
           name: str = "latest_net_G_A.pth") -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    ref = randomise(RefResnetGenerator(in_nc, out_nc, ngf=4, n_blocks=2, kind=kind))
    return ref, save_reference(ref, tmp_path, name)


def per_image(net, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """The reference's test loop: one image at a time (batch 1), each from the same seed."""
    outs = []
    for i in range(len(x)):
        if seed is not None:
            torch.manual_seed(seed)
        out = net(x[i:i + 1].clone())
        outs.append(out["translation"] if isinstance(out, dict) else out)
    return torch.cat(outs)


# ---------------------------------------------------------------------------------------------
# pix2pix in both of the reference's test modes, with and without dropout


@pytest.mark.parametrize("dropout", [True, False])
def test_pix2pix_matches_the_reference_test_without_eval(dropout: bool, tmp_path: Path) -> None:
    """No --eval: BatchNorm on the image's own statistics; dropout stays on (stochastic)."""
    ref, pth = unet(tmp_path, dropout)
    out = import_reference(pth, "pix2pix", tmp_path / "p.safetensors",
                           dropout=None if dropout else False)
    model, _ = load(out)
    assert (model.config.dropout, model.config.running_stats) == (dropout, False)
    model.keep_dropout()
    x = images(2, 3, 64)
    with torch.no_grad():
        expected = per_image(ref.train(), x, seed=7)
        got = per_image(model, x, seed=7)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    if dropout:          # the same seed is what made them agree: dropout was really on
        with torch.no_grad():
            other = per_image(model, x, seed=8)
        assert (other - expected).abs().max() > 1e-2


@pytest.mark.parametrize("dropout", [True, False])
def test_pix2pix_eval_matches_the_reference_test_with_eval(dropout: bool, tmp_path: Path) -> None:
    """--eval: running statistics, dropout off, so batching does not change results."""
    ref, pth = unet(tmp_path, dropout)
    out = import_reference(pth, "pix2pix", tmp_path / "p.safetensors",
                           dropout=None if dropout else False, running_stats=True)
    model, _ = load(out)
    assert model.config.running_stats is True
    x = images(3, 3, 64)
    with torch.no_grad():
        expected = ref.eval()(x)
        got = model(x)["translation"]
        own_stats = per_image(ref.train(), x) if not dropout else None
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    if own_stats is not None:      # the running statistics are not the per-image ones
        assert (own_stats - expected).abs().max() > 1e-2


def test_pix2pix_eval_exports_through_the_gate(tmp_path: Path) -> None:
    ref, pth = unet(tmp_path, dropout=True)
    ckpt = import_reference(pth, "pix2pix", tmp_path / "p.safetensors", running_stats=True)
    out = build(ckpt, ExportOptions(out=tmp_path / "export", formats=("onnx",),
                                    batch=(1, 2, 2), log=lambda *_: None))
    assert read_manifest(out)["signatures"]["default"]["artifacts"]["onnx"]["passed"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = images(2, 3, 64)
    (y,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = ref.eval()(x).numpy()
    assert np.abs(y - want).max() < 1e-4


# ---------------------------------------------------------------------------------------------
# --norm: read off the keys, checked when given


@pytest.mark.parametrize("kind", ["batch", "none"])
def test_resnet_other_norms_import_and_match(kind: str, tmp_path: Path) -> None:
    ref, pth = resnet(tmp_path, kind)
    out = import_reference(pth, "cyclegan", tmp_path / "g.safetensors", running_stats=True)
    model, _ = load(out)
    assert model.config.norm == kind
    assert model.config.running_stats is (kind == "batch")
    x = images(2, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["translation"], ref.eval()(x), atol=1e-5, rtol=0)


def test_resnet_batch_norm_without_eval_uses_each_images_statistics(tmp_path: Path) -> None:
    ref, pth = resnet(tmp_path, "batch")
    model, _ = load(import_reference(pth, "cyclegan", tmp_path / "g.safetensors"))
    x = images(2, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["translation"], per_image(ref.train(), x),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["instance", "none"])
def test_unet_other_norms_import_and_match(kind: str, tmp_path: Path) -> None:
    ref, pth = unet(tmp_path, dropout=False, kind=kind)
    model, _ = load(import_reference(pth, "pix2pix", tmp_path / "p.safetensors",
                                     dropout=False))
    assert model.config.norm == kind
    x = images(2, 3, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["translation"], ref.eval()(x), atol=1e-5, rtol=0)


def test_norm_contradicting_the_keys_is_an_error(tmp_path: Path) -> None:
    _, pth = resnet(tmp_path, "batch")
    with pytest.raises(CheckpointError, match=r"--norm instance was asked for, but the file's "
                                              r"keys show batch"):
        import_reference(pth, "cyclegan", tmp_path / "g.safetensors", norm="instance")
    with pytest.raises(CheckpointError, match="--norm must be one of instance, batch, none"):
        import_reference(pth, "cyclegan", tmp_path / "g.safetensors", norm="group")


def test_batch_norm_file_cannot_become_an_additive_model(tmp_path: Path) -> None:
    _, pth = resnet(tmp_path, "batch")
    with pytest.raises(CheckpointError, match=r"model 'additive' has no 'norm' setting.*"
                                              r"models with it: cyclegan, pix2pix"):
        import_reference(pth, "additive", tmp_path / "a.safetensors")


def test_fused_engine_leaves_batch_normed_steps_to_eager(tmp_path: Path) -> None:
    _, pth = resnet(tmp_path, "batch")
    model, _ = load(import_reference(pth, "cyclegan", tmp_path / "g.safetensors"))
    with pytest.raises(ValueError, match="found nothing to fuse"):
        use_fused_kernels(model)


# ---------------------------------------------------------------------------------------------
# Channels: grey <-> colour


def test_grey_to_colour_resnet_imports_matches_and_exports(tmp_path: Path) -> None:
    ref, pth = resnet(tmp_path, in_nc=1, out_nc=3)
    ckpt = import_reference(pth, "cyclegan", tmp_path / "g.safetensors")
    model, spec = load(ckpt)
    assert (spec.image.channels, spec.outputs[0].channels) == (1, 3)
    x = images(2, 1, 16)
    with torch.no_grad():
        got = model(x)["translation"]
        torch.testing.assert_close(got, ref.eval()(x), atol=1e-5, rtol=0)
    assert got.shape == (2, 3, 16, 16)
    out = build(ckpt, ExportOptions(out=tmp_path / "export", formats=("onnx",),
                                    batch=(1, 2, 2), log=lambda *_: None))
    inputs = read_manifest(out)["signatures"]["default"]["inputs"]
    assert inputs[0]["shape"][1] == 1


def test_colour_to_grey_unet_imports_and_matches(tmp_path: Path) -> None:
    ref, pth = unet(tmp_path, dropout=False, in_nc=3, out_nc=1)
    model, spec = load(import_reference(pth, "pix2pix", tmp_path / "p.safetensors",
                                        dropout=False, output_nc=1))
    assert (model.config.channels, model.config.out_channels) == (3, 1)
    assert spec.outputs[0].channels == 1
    x = images(2, 3, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["translation"], per_image(ref.train(), x),
                                   atol=1e-4, rtol=0)


def test_grey_to_colour_translates_a_picture(tmp_path: Path) -> None:
    from PIL import Image

    import i2i
    _, pth = resnet(tmp_path, in_nc=1, out_nc=3)
    ckpt = import_reference(pth, "cyclegan", tmp_path / "g.safetensors")
    grey = Image.fromarray(np.arange(20 * 24, dtype=np.uint8).reshape(20, 24) % 251)
    result = i2i.translate(grey, ckpt, engine="eager", device="cpu")
    assert result.size == (24, 20) and result.mode == "RGB"


def test_channels_contradicting_the_keys_are_errors(tmp_path: Path) -> None:
    _, pth = resnet(tmp_path, in_nc=1, out_nc=3)
    with pytest.raises(CheckpointError, match=r"--input-nc 3 was asked for, but the file's "
                                              r"keys show 1"):
        import_reference(pth, "cyclegan", tmp_path / "g.safetensors", input_nc=3)
    with pytest.raises(CheckpointError, match=r"--output-nc 1 was asked for.*show 3"):
        import_reference(pth, "cyclegan", tmp_path / "g.safetensors", output_nc=1)
    with pytest.raises(CheckpointError, match=r"model 'maskcyclegan'|model 'additive' has no "
                                              r"'out_channels' setting"):
        import_reference(pth, "additive", tmp_path / "a.safetensors")


# ---------------------------------------------------------------------------------------------
# Direction: which generator of a run the file was


@pytest.mark.parametrize(("name", "asked", "direction", "source"), [
    ("latest_net_G_A.pth", None, "AtoB", "file name"),
    ("200_net_G_B.pth", None, "BtoA", "file name"),
    ("netG_B2A.pth", None, "BtoA", "file name"),
    ("latest_net_G.pth", None, "AtoB", "reference default"),
    ("latest_net_G_A.pth", "BtoA", "BtoA", "caller"),
])
def test_direction_is_recorded(name: str, asked: str | None, direction: str, source: str,
                               tmp_path: Path) -> None:
    _, pth = resnet(tmp_path, name=name)
    out = import_reference(pth, "cyclegan", tmp_path / "g.safetensors", direction=asked)
    meta = read_document(out)["meta"]
    assert (meta["direction"], meta["direction_from"]) == (direction, source)


def test_cli_takes_the_reference_option_names(tmp_path: Path) -> None:
    _, pth = unet(tmp_path, dropout=False, in_nc=1, out_nc=3)
    out = tmp_path / "p.safetensors"
    result = run_cli(str(pth), "--model", "pix2pix", "--out", str(out), "--no-dropout",
                     "--norm", "batch", "--input-nc", "1", "--output-nc", "3", "--eval",
                     "--direction", "BtoA")
    assert result.returncode == 0, result.stderr
    document = read_document(out)
    assert document["config"]["running_stats"] is True
    assert (document["config"]["channels"], document["config"]["out_channels"]) == (1, 3)
    assert document["meta"]["direction"] == "BtoA"
    bad = run_cli(str(pth), "--model", "pix2pix", "--out", str(out), "--norm", "instance")
    assert bad.returncode == 2 and "keys show batch" in bad.stderr


# ---------------------------------------------------------------------------------------------
# Imported unet_128 and unet_256 export with no size flags


@pytest.mark.parametrize(("depth", "size"), [(7, 128), (8, 256)])
def test_imported_unet_exports_at_its_own_size_with_no_size_flags(depth: int, size: int,
                                                                   tmp_path: Path) -> None:
    from i2i.export.cli import main

    ref, pth = unet(tmp_path, dropout=True, depth=depth)
    ckpt = import_reference(pth, "pix2pix", tmp_path / "p.safetensors")
    code = main(["--checkpoint", str(ckpt), "--model", "pix2pix", "--formats", "onnx",
                 "--batch", "1:1:2", "--out", str(tmp_path / "export")])
    assert code == 0
    manifest = read_manifest(tmp_path / "export")
    assert manifest["size"] == [size, size]
    assert manifest["signatures"]["default"]["artifacts"]["onnx"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = images(2, 3, size)
    (y,) = session.run(None, {"image": x.numpy()})
    ref.train()
    for m in ref.modules():          # the reference's test without --eval, dropout aside
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        want = per_image(ref, x).numpy()
    assert np.abs(y - want).max() < 1e-4


def test_imported_resnet_exports_with_the_default_formats(tmp_path: Path) -> None:
    from i2i.export.cli import main

    ref, pth = resnet(tmp_path)
    ckpt = import_reference(pth, "cyclegan", tmp_path / "g.safetensors")
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "export")]) == 0
    manifest = read_manifest(tmp_path / "export")
    assert manifest["size"] == [256, 256]                    # the reference's crop
    artifacts = manifest["signatures"]["default"]["artifacts"]
    assert {"onnx", "aoti"} <= set(artifacts)
    assert all(a["passed"] for a in artifacts.values() if "passed" in a)
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = images(1, 3, 64)
    (y,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - ref.eval()(x).numpy()).max() < 1e-4
