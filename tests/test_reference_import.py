"""Tests for i2i.models.reference against generators built here in the reference code's layout.

The reference networks below are written from the layout in REFERENCE.md section 1 (nn.Sequential
indices, nested U-Net skip blocks with in-place LeakyReLU), not from i2i's own modules, so the
importer's key mapping and the converted model's numerics are checked against an independent net.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from i2i.models import MODELS, CheckpointError, UnknownModelError, load, read_document
from i2i.models.reference import import_reference

REPO = Path(__file__).resolve().parents[1]
UNPICKLED: list[object] = []      # filled only if a test payload is ever fully unpickled




# ---------------------------------------------------------------------------------------------
# The reference ResNet generator: one nn.Sequential, keys "model.<index>...."


def ref_norm(channels: int, stale_stats: bool, kind: str = "instance") -> nn.Module:
    """The reference's --norm choices. Old reference checkpoints were saved with
    track_running_stats=True InstanceNorms."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=stale_stats)


class RefResnetBlock(nn.Module):
    def __init__(self, dim: int, dropout: bool, stale_stats: bool, kind: str = "instance"):
        super().__init__()
        bias = kind == "instance"                       # the reference's use_bias
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias),
                  ref_norm(dim, stale_stats, kind), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias),
                   ref_norm(dim, stale_stats, kind)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class RefResnetGenerator(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 dropout: bool = False, stale_stats: bool = False, kind: str = "instance"):
        super().__init__()
        norm = lambda c: ref_norm(c, stale_stats, kind)
        bias = kind == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), norm(ngf),
                  nn.ReLU(True)]
        for mult in (1, 2):                                         # indices 4-6, 7-9
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [RefResnetBlock(ngf * 4, dropout, stale_stats, kind) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------
# The reference U-Net: nested skip blocks, keys "model.model.<index>.model.<index>...."


class RefUnetBlock(nn.Module):
    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False,
                 innermost: bool = False, dropout: bool = False, kind: str = "batch"):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        bias = kind == "instance"                          # the reference's use_bias
        norm = lambda c: ref_norm(c, False, kind)
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        downrelu = nn.LeakyReLU(0.2, True)                # in place, as in the reference
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            layers = [downrelu, downconv, uprelu, upconv, norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1,
                                        bias=bias)
            layers = [downrelu, downconv, norm(inner_nc), submodule, uprelu, upconv,
                      norm(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The in-place LeakyReLU at model[0] has already activated x when it is concatenated.
        # (The parent's up path starts with ReLU, so a raw skip would give the same output.)
        return torch.cat([x, self.model(x)], 1)


class RefUnetGenerator(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 dropout: bool = True, kind: str = "batch"):
        super().__init__()
        block = RefUnetBlock(ngf * 8, ngf * 8, innermost=True, kind=kind)
        for _ in range(num_downs - 5):
            block = RefUnetBlock(ngf * 8, ngf * 8, submodule=block, dropout=dropout, kind=kind)
        block = RefUnetBlock(ngf * 4, ngf * 8, submodule=block, kind=kind)
        block = RefUnetBlock(ngf * 2, ngf * 4, submodule=block, kind=kind)
        block = RefUnetBlock(ngf, ngf * 2, submodule=block, kind=kind)
        self.model = RefUnetBlock(out_nc, ngf, input_nc=in_nc, submodule=block, outermost=True,
                                  kind=kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------
# Helpers


def random_images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def randomise(net: nn.Module) -> nn.Module:
    """Non-trivial biases, BN affine and running stats (all of which a wrong mapping would miss)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.normal_(0, 0.1)
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.running_mean is not None:
                m.running_mean.normal_(0, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(11)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return net


def save_reference(net: nn.Module, tmp_path: Path, name: str = "latest_net_G_A.pth") -> Path:
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return path


def resnet_state(n_blocks: int = 2, dropout: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return randomise(RefResnetGenerator(ngf=4, n_blocks=n_blocks, dropout=dropout)).state_dict()


def shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The test's reference nets follow REFERENCE.md


def expected_resnet_layout(n_blocks: int, ngf: int = 64) -> dict[str, tuple[int, ...]]:
    """Keys and weight shapes REFERENCE.md lists for the reference ResNet generator."""
    d = 4 * ngf
    weights = {"model.1": (ngf, 3, 7, 7), "model.4": (2 * ngf, ngf, 3, 3),
               "model.7": (d, 2 * ngf, 3, 3)}
    for i in range(10, 10 + n_blocks):
        weights[f"model.{i}.conv_block.1"] = (d, d, 3, 3)
        weights[f"model.{i}.conv_block.5"] = (d, d, 3, 3)
    up1, up2, last = {9: (19, 22, 26), 6: (16, 19, 23)}[n_blocks]
    weights[f"model.{up1}"] = (d, 2 * ngf, 3, 3)                  # ConvT (in, out, k, k)
    weights[f"model.{up2}"] = (2 * ngf, ngf, 3, 3)
    weights[f"model.{last}"] = (3, ngf, 7, 7)
    layout = {}
    for prefix, shape in weights.items():
        layout[f"{prefix}.weight"] = shape
        layout[f"{prefix}.bias"] = (shape[1] if prefix in (f"model.{up1}", f"model.{up2}")
                                    else shape[0],)
    return layout


@pytest.mark.parametrize("n_blocks, n_params", [(9, 11_378_179), (6, 7_837_699)])
def test_reference_resnet_layout_matches_reference_md(n_blocks: int, n_params: int) -> None:
    with torch.device("meta"):
        net = RefResnetGenerator(ngf=64, n_blocks=n_blocks)
    assert shapes(net) == expected_resnet_layout(n_blocks)
    assert sum(p.numel() for p in net.parameters()) == n_params


def test_reference_resnet_dropout_moves_the_second_conv() -> None:
    with torch.device("meta"):
        net = RefResnetGenerator(ngf=64, n_blocks=9, dropout=True)
    keys = set(net.state_dict())
    assert "model.10.conv_block.6.weight" in keys and "model.10.conv_block.5.weight" not in keys


def test_reference_unet_256_size_and_keys() -> None:
    with torch.device("meta"):
        net = RefUnetGenerator(num_downs=8, ngf=64)
    assert sum(p.numel() for p in net.parameters()) == 54_413_955      # "54.4 M"
    layout = shapes(net)
    assert layout["model.model.0.weight"] == (64, 3, 4, 4)
    assert layout["model.model.3.weight"] == (128, 3, 4, 4)
    assert layout["model.model.3.bias"] == (3,)
    innermost = "model.model." + "1.model." + "3.model." * 6
    assert layout[innermost + "1.weight"] == (512, 512, 4, 4)
    assert layout[innermost + "3.weight"] == (512, 512, 4, 4)


# ---------------------------------------------------------------------------------------------
# ResNet import: cyclegan and additive


@pytest.mark.parametrize("n_blocks, dropout", [(2, False), (3, False), (3, True)])
def test_import_resnet_matches_the_reference(n_blocks: int, dropout: bool,
                                             tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefResnetGenerator(ngf=4, n_blocks=n_blocks, dropout=dropout)).eval()
    second = 6 if dropout else 5
    assert f"model.10.conv_block.{second}.weight" in ref.state_dict()
    pth = save_reference(ref, tmp_path)

    out = import_reference(pth, "cyclegan", tmp_path / "g.safetensors")
    model, spec = load(out)
    assert (model.config.ngf, model.config.n_blocks, model.config.dropout) == (4, n_blocks,
                                                                                dropout)
    assert [o.name for o in spec.outputs] == ["translation"]
    images = random_images(2, 16)
    with torch.no_grad():
        expected = ref(images)
        got = model(images)["translation"]
    assert expected.std() > 0
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    document = read_document(out)
    assert document["model"] == "cyclegan"
    assert document["meta"]["imported_from"] == "latest_net_G_A.pth"
    assert document["meta"]["source_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()


def test_import_as_additive_uses_the_reference_output_as_mask(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefResnetGenerator(ngf=4, n_blocks=2)).eval()
    out = import_reference(save_reference(ref, tmp_path), "additive", tmp_path / "a.safetensors")
    model, spec = load(out)
    assert [o.name for o in spec.outputs] == ["translation", "mask"]
    images = random_images(2, 16)
    with torch.no_grad():
        expected = ref(images)
        got = model(images)
    torch.testing.assert_close(got["mask"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got["translation"], (images + expected).clamp(-1, 1),
                               atol=1e-5, rtol=0)


def test_import_drops_stale_instance_norm_running_stats(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefResnetGenerator(ngf=4, n_blocks=2, stale_stats=True))
    state = ref.state_dict()
    assert "model.2.running_mean" in state and "model.10.conv_block.2.num_batches_tracked" in state
    out = import_reference(save_reference(ref, tmp_path), "cyclegan", tmp_path / "g.safetensors")
    model, _ = load(out)
    images = random_images(2, 16)
    with torch.no_grad():
        # Train mode: InstanceNorm uses each sample's own statistics, as the reference always
        # did when these stats were saved (and as i2i does); no dropout in this net.
        expected = ref.train()(images)
        got = model(images)["translation"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# U-Net import: pix2pix


@pytest.mark.parametrize("depth", [5, 6])
def test_import_unet_matches_train_mode_reference_at_batch_one(depth: int,
                                                              tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefUnetGenerator(num_downs=depth, ngf=4, dropout=True))
    if depth == 6:
        assert any(isinstance(m, nn.Dropout) for m in ref.modules())
    out = import_reference(save_reference(ref, tmp_path, "latest_net_G.pth"), "pix2pix",
                           tmp_path / "p.safetensors")
    model, spec = load(out)
    assert (model.config.depth, model.config.ngf) == (depth, 4)
    spec.check_size(64, 64)

    # The reference test script: train-mode BN (batch statistics) at batch 1; dropout off here.
    ref.train()
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    images = random_images(2, 64)
    with torch.no_grad():
        for i in range(2):
            expected = ref(images[i:i + 1].clone())
            got = model(images[i:i + 1])["translation"]
            assert expected.std() > 0
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        # and batching in i2i does not change that result
        batched = model(images)["translation"]
        torch.testing.assert_close(batched[1:], got, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Errors


def test_extra_key_is_named(tmp_path: Path) -> None:
    state = {**resnet_state(), "model.99.weight": torch.zeros(2)}
    path = tmp_path / "g.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys .*'model\.99\.weight'"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()


def test_missing_block_conv_is_named(tmp_path: Path) -> None:
    state = resnet_state(n_blocks=3)
    del state["model.11.conv_block.5.weight"], state["model.11.conv_block.5.bias"]
    path = tmp_path / "g.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError,
                       match=r"missing keys \['generator\.blocks\.1\.conv2\.bias', "
                             r"'generator\.blocks\.1\.conv2\.weight'\]"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")


def test_random_bytes_are_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"g\.pth could not be read as a weights-only "
                                              r"state_dict"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")


def test_pickle_of_non_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match=r"does not hold a plain state_dict of tensors"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")


class Payload:
    """A custom object: loading it needs full unpickling, which would call __setstate__."""

    def __init__(self) -> None:
        self.weight = torch.zeros(1)

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append(state)
        self.__dict__.update(state)


def test_custom_objects_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save({"model.1.weight": Payload()}, path)
    UNPICKLED.clear()
    with pytest.raises(CheckpointError,
                       match=r"could not be read as a weights-only state_dict.*"
                             r"(Unsupported global|Weights only load failed)"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")
    assert UNPICKLED == []
    # Control: a full unpickle of the same file would have run the payload's code.
    torch.load(path, weights_only=False)
    assert len(UNPICKLED) == 1


def test_unknown_model_name(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(), path)
    # A user argument, not file content: the registry's UnknownModelError (a ValueError).
    with pytest.raises(UnknownModelError, match=r"unknown model 'cyclegn' \(did you mean "
                                                r"'cyclegan'\?\)"):
        import_reference(path, "cyclegn", tmp_path / "g.safetensors")


def test_registered_model_without_importer(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A generator of a known architecture whose entry names no reference layout.
    monkeypatch.setitem(MODELS, "newmodel", dataclasses.replace(MODELS["cyclegan"],
                                                                reference=None))
    path = tmp_path / "g.pth"
    torch.save(resnet_state(), path)
    with pytest.raises(CheckpointError, match=r"no reference importer for model 'newmodel'"):
        import_reference(path, "newmodel", tmp_path / "g.safetensors")


def test_resnet_file_imported_as_pix2pix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(), path)
    with pytest.raises(CheckpointError, match=r"not a reference U-Net generator"):
        import_reference(path, "pix2pix", tmp_path / "g.safetensors")


def test_missing_reference_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"reference checkpoint .*nothere\.pth does not "
                                              r"exist"):
        import_reference(tmp_path / "nothere.pth", "cyclegan", tmp_path / "g.safetensors")


# ---------------------------------------------------------------------------------------------
# Command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2i.models.reference", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefResnetGenerator(ngf=4, n_blocks=2)).eval()
    pth = save_reference(ref, tmp_path)
    out = tmp_path / "h2z.safetensors"
    result = run_cli(str(pth), "--model", "cyclegan", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    model, _ = load(out)
    images = random_images(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(images)["translation"], ref(images), atol=1e-5, rtol=0)


def test_cli_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    result = run_cli(str(bad), "--out", str(tmp_path / "x.safetensors"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "could not be read as a weights-only state_dict" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()
