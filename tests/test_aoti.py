"""AOTInductor packages: parity with eager over the dynamic batch range, and the clear errors.

Each compile takes 10-30 s on a 2-core CPU, so each model is exported once per module (LOMIT's
two packages, plain and masked, by one i2i.export.build).
"""

from __future__ import annotations

import pytest
import torch

import i2i.models
from i2i.engines.aoti import load_aoti
from i2i.export import ExportOptions, build, read_manifest
from i2i.export.aoti import export_aoti

from .test_export_lomit import lomit_checkpoint

SIZE = (16, 16)
TOLERANCE = 1e-4                 # max abs error on outputs in [-1, 1]; measured ~1e-6


def _tiny(name: str) -> tuple[torch.nn.Module, i2i.models.ModelSpec]:
    torch.manual_seed(0)
    config = i2i.models.make_config(name, {"ngf": 4, "n_blocks": 1})
    return i2i.models.build(name, config), i2i.models.get_entry(name).spec(config)


def _images(batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, *SIZE), generator=g) * 2 - 1          # (N, 3, H, W) in [-1, 1]


@pytest.fixture(scope="module")
def additive(tmp_path_factory):
    module, spec = _tiny("additive")
    module.eval()
    path = tmp_path_factory.mktemp("aoti") / "additive.pt2"
    facts = export_aoti(module, spec, path, batch=(1, 2, 4), size=SIZE)
    return module, spec, path, facts, load_aoti(path, spec)


@pytest.fixture(scope="module")
def cyclegan(tmp_path_factory):
    module, spec = _tiny("cyclegan")                 # left in train mode: export must not care
    path = tmp_path_factory.mktemp("aoti") / "cyclegan.pt2"
    export_aoti(module, spec, path, batch=(1, 2, 2), size=SIZE)
    still_training = module.training
    return module.eval(), spec, path, still_training


def test_manifest_facts(additive):
    _, _, path, facts, _ = additive
    assert path.is_file()
    assert facts["batch"] == [1, 2, 4] and facts["size"] == [16, 16]
    assert facts["dynamic"] == ["batch"] and facts["device"] == "cpu"
    assert facts["torch"] == torch.__version__


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_additive_matches_eager(additive, batch):
    module, spec, _, _, run = additive
    x = _images(batch)
    with torch.no_grad():
        expected = module(image=x)
    out = run({"image": x})
    assert list(out) == [t.name for t in spec.outputs]
    for name in ("translation", "mask"):
        assert out[name].shape == (batch, 3, *SIZE)
        assert (out[name] - expected[name]).abs().max().item() <= TOLERANCE, name


def test_non_contiguous_input_is_read_correctly(additive):
    module, _, _, _, run = additive
    x = _images(2).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = module(image=x)["translation"]
    assert (run({"image": x})["translation"] - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("batch", [5, 8])
def test_batch_outside_range_fails_clearly(additive, batch):
    run = additive[4]
    with pytest.raises(ValueError, match=r"outside the range \[1, 4\]"):
        run({"image": _images(batch)})


def test_other_size_and_names_fail_clearly(additive):
    run = additive[4]
    with pytest.raises(ValueError, match="fixed at export"):
        run({"image": torch.zeros(1, 3, 32, 32)})
    with pytest.raises(ValueError, match="do not match"):
        run({"img": _images(1)})


def test_missing_package(tmp_path):
    _, spec = _tiny("additive")
    with pytest.raises(FileNotFoundError, match="re-export"):
        load_aoti(tmp_path / "nothing.pt2", spec)


def test_corrupt_package(tmp_path):
    _, spec = _tiny("additive")
    path = tmp_path / "corrupt.pt2"
    path.write_bytes(b"not a zip archive" * 64)
    with pytest.raises(RuntimeError, match="corrupt.pt2.*re-export"):
        load_aoti(path, spec)


def test_package_for_another_model(additive):
    path = additive[2]
    _, spec = _tiny("cyclegan")
    with pytest.raises(RuntimeError, match="re-export it for this model"):
        load_aoti(path, spec)


def test_bad_batch_range_and_size(tmp_path):
    module, spec = _tiny("additive")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        export_aoti(module, spec, tmp_path / "x.pt2", batch=(0, 2, 4), size=SIZE)
    with pytest.raises(ValueError, match="multiples of 4"):
        export_aoti(module, spec, tmp_path / "x.pt2", batch=(1, 2, 4), size=(18, 16))


@pytest.mark.parametrize("batch", [1, 2])
def test_cyclegan_matches_eager(cyclegan, batch):
    module, spec, path, still_training = cyclegan
    assert still_training                            # export left the caller's module alone
    run = load_aoti(path, spec)
    x = _images(batch, seed=2)
    with torch.no_grad():
        expected = module(image=x)["translation"]
    out = run({"image": x})
    assert list(out) == ["translation"]
    assert (out["translation"] - expected).abs().max().item() <= TOLERANCE


@pytest.fixture(scope="module")
def lomit(tmp_path_factory):
    root = tmp_path_factory.mktemp("lomit")
    ckpt = lomit_checkpoint(root)
    out = build(ckpt, ExportOptions(out=root / "export", formats=("aoti",), batch=(1, 2, 3),
                                    log=lambda *_: None))
    module, spec = i2i.models.load(ckpt)
    return out, module, spec


def _pairs(batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    return {"image": _images(batch, seed=3), "exemplar": _images(batch, seed=4),
            "mask": torch.rand((batch, 1, *SIZE), generator=g)}


def test_lomit_packages_pass_the_gate(lomit):
    out, _, _ = lomit
    manifest = read_manifest(out)
    plain = manifest["signatures"]["default"]["artifacts"]["aoti"]
    masked = manifest["signatures"]["masked"]["artifacts"]["aoti"]
    assert plain["file"] == "model.pt2" and masked["file"] == "model.masked.pt2"
    for entry in (plain, masked):
        assert entry["passed"] and entry["batch"] == [1, 2, 3]
        assert max(v["max_abs"] for v in entry["parity"].values()) <= TOLERANCE
    assert set(masked["parity"]) == {"translation", "exemplar_mask"}


@pytest.mark.parametrize("batch", [1, 3])
def test_lomit_matches_eager(lomit, batch):
    out, module, spec = lomit
    x = _pairs(batch)
    with torch.no_grad():
        plain_want = module(x["image"], x["exemplar"])
        masked_want = module.translate(x["image"], x["exemplar"], mask=x["mask"])
    plain = load_aoti(out / "model.pt2", spec)({k: x[k] for k in ("image", "exemplar")})
    masked = load_aoti(out / "model.masked.pt2", i2i.models.signatures(module)["masked"])(x)
    assert list(plain) == ["translation", "mask", "exemplar_mask"]
    assert list(masked) == ["translation", "exemplar_mask"]
    for got, want in ((plain, plain_want), (masked, masked_want)):
        for name, value in got.items():
            assert (value - want[name]).abs().max().item() <= TOLERANCE, name


def test_lomit_inputs_must_share_the_batch(lomit):
    out, module, spec = lomit
    run = load_aoti(out / "model.masked.pt2", i2i.models.signatures(module)["masked"])
    x = _pairs(2)
    with pytest.raises(ValueError, match=r"share batch.*exemplar \(1, 3, 16, 16\)"):
        run({**x, "exemplar": x["exemplar"][:1]})
    with pytest.raises(ValueError, match=r"input 'mask' has shape \(2, 3, 16, 16\)"):
        run({**x, "mask": x["image"]})
