"""i2i.models.reference: the dropout choice, Mask CycleGAN (mask-cgan) files, and errors that say
what a file holds. The reference-layout networks and helpers are test_reference_import's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from i2i.models import CheckpointError, load, read_document
from i2i.models.maskcyclegan import MaskCycleGANConfig, MaskCycleGANTranslator
from i2i.models.reference import import_reference, maskcyclegan_key_map

from .test_reference_import import (
    RefResnetGenerator,
    RefUnetGenerator,
    random_images,
    randomise,
    resnet_state,
    run_cli,
    save_reference,
)

LAYOUTS_LINE = (r"Reference layouts: resnet \(models additive, cyclegan\), "
                r"unet \(models pix2pix\), maskcyclegan \(models maskcyclegan\)")


def unet_file(tmp_path: Path, dropout: bool, depth: int = 6) -> Path:
    torch.manual_seed(0)
    ref = randomise(RefUnetGenerator(num_downs=depth, ngf=4, dropout=dropout))
    return save_reference(ref, tmp_path, "latest_net_G.pth")


# ---------------------------------------------------------------------------------------------
# Dropout: the caller's choice for a U-Net, the keys' for a ResNet


def test_unet_without_dropout_imported_with_no_dropout(tmp_path: Path) -> None:
    out = import_reference(unet_file(tmp_path, dropout=False), "pix2pix",
                           tmp_path / "p.safetensors", dropout=False)
    model, _ = load(out)
    assert model.config.dropout is False
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert read_document(out)["meta"]["dropout_from"] == "caller"


@pytest.mark.parametrize("depth", [5, 6])
def test_unet_default_is_the_reference_default_dropout_on(depth: int, tmp_path: Path) -> None:
    out = import_reference(unet_file(tmp_path, dropout=True, depth=depth), "pix2pix",
                           tmp_path / "p.safetensors")
    model, _ = load(out)
    assert model.config.dropout is True
    assert read_document(out)["meta"]["dropout_from"] == "reference default"


def test_cli_no_dropout(tmp_path: Path) -> None:
    out = tmp_path / "p.safetensors"
    result = run_cli(str(unet_file(tmp_path, dropout=False)), "--model", "pix2pix",
                     "--no-dropout", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert load(out)[0].config.dropout is False


@pytest.mark.parametrize("dropout", [None, False])
def test_resnet_dropout_comes_from_the_keys(dropout: bool | None, tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(dropout=False), path)
    out = import_reference(path, "cyclegan", tmp_path / "g.safetensors", dropout=dropout)
    assert load(out)[0].config.dropout is False
    assert read_document(out)["meta"]["dropout_from"] == "keys"


def test_no_dropout_contradicting_resnet_keys_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(dropout=True), path)
    with pytest.raises(CheckpointError, match=r"hold a dropout layer .*conv_block\.6.*trained "
                                              r"with dropout, so import it without --no-dropout"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors", dropout=False)
    assert not (tmp_path / "g.safetensors").exists()
    result = run_cli(str(path), "--no-dropout", "--out", str(tmp_path / "g.safetensors"))
    assert result.returncode == 2 and "trained with dropout" in result.stderr


def test_dropout_contradicting_resnet_keys_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(dropout=False), path)
    with pytest.raises(CheckpointError, match=r"hold no dropout layer .*conv_block\.5.*"
                                              r"trained with --no_dropout"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors", dropout=True)


# ---------------------------------------------------------------------------------------------
# Mask CycleGAN: mask-cgan's Generator(use_mask=True)


class RefMaskGenerator(RefResnetGenerator):
    """mask-cgan's layout: the ResNet Sequential `model` plus 1x1 `mask_model`, `context_model`,
    fed a C-channel mask."""

    def __init__(self, c: int = 3, ngf: int = 4, n_blocks: int = 2):
        super().__init__(c, c, ngf=ngf, n_blocks=n_blocks)
        self.mask_model = nn.Conv2d(2 * c, c, 1)
        self.context_model = nn.Conv2d(2 * c, c, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.model(self.mask_model(torch.cat([x * mask, mask], 1)))
                + self.context_model(torch.cat([x * (1 - mask), 1 - mask], 1)))


def random_masks(n: int, size: int, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=generator) > 0.5).float()


def test_maskcyclegan_keys_inverted_from_i2i_round_trip_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = randomise(MaskCycleGANTranslator(MaskCycleGANConfig(ngf=4, n_blocks=2))).eval()
    inverse = {i2i: ref for ref, i2i in maskcyclegan_key_map(2, dropout=False).items()}
    state = {}
    for key, value in original.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        state[f"{inverse[prefix]}.{leaf}"] = value.clone()
    assert {"mask_model.weight", "context_model.bias", "model.1.weight"} <= set(state)
    path = tmp_path / "netG_A2B.pth"
    torch.save(state, path)

    out = import_reference(path, "maskcyclegan", tmp_path / "m.safetensors")
    model, spec = load(out)
    assert (model.config.ngf, model.config.n_blocks, model.config.dropout) == (4, 2, False)
    assert [t.name for t in spec.inputs] == ["image", "mask"]
    images, masks = random_images(2, 16), random_masks(2, 16)
    with torch.no_grad():
        expected = original(images, masks)["translation"]
        got = model(images, masks)["translation"]
    assert expected.std() > 0
    torch.testing.assert_close(got, expected, atol=0.0, rtol=0.0)


def test_maskcyclegan_matches_a_mask_cgan_layout_net(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = randomise(RefMaskGenerator()).eval()
    out = import_reference(save_reference(ref, tmp_path, "netG_A2B.pth"), "maskcyclegan",
                           tmp_path / "m.safetensors")
    model, _ = load(out)
    images, masks = random_images(2, 16), random_masks(2, 16)
    with torch.no_grad():
        expected = ref(images, masks.expand(-1, 3, -1, -1)).clamp(-1, 1)
        got = model(images, masks)["translation"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Errors say what the file holds and which layouts there are


def test_unet_file_imported_as_cyclegan_lists_keys_and_layouts(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a reference ResNet generator: no "
                                              r"'model\.1\.weight' key; the file holds "
                                              r"model\.model\.0\.weight \(4, 3, 4, 4\).*"
                                              r"import it with --model pix2pix\. "
                                              + LAYOUTS_LINE):
        import_reference(unet_file(tmp_path, dropout=True), "cyclegan",
                         tmp_path / "g.safetensors")


def test_mask_file_imported_as_cyclegan_names_maskcyclegan(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_reference(randomise(RefMaskGenerator()), tmp_path, "netG_A2B.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys .*'mask_model\.weight'.*"
                                              r"the file holds context_model\.bias \(3,\).*"
                                              r"--model maskcyclegan"):
        import_reference(path, "cyclegan", tmp_path / "g.safetensors")


def test_cyclegan_file_imported_as_maskcyclegan_names_resnet_models(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save(resnet_state(), path)
    with pytest.raises(CheckpointError, match=r"no 'mask_model\.weight' key.*"
                                              r"--model additive or --model cyclegan\. "
                                              + LAYOUTS_LINE):
        import_reference(path, "maskcyclegan", tmp_path / "m.safetensors")


def test_empty_state_dict_says_so(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save({}, path)
    with pytest.raises(CheckpointError, match=r"the file holds no tensors\. It has the signature "
                                              r"keys of no reference layout\. " + LAYOUTS_LINE):
        import_reference(path, "pix2pix", tmp_path / "p.safetensors")


def test_imported_mask_cgan_generator_exports_and_matches_it(tmp_path: Path) -> None:
    import onnxruntime as ort

    from i2i.export import ExportOptions, build, read_manifest
    torch.manual_seed(0)
    ref = randomise(RefMaskGenerator()).eval()
    ckpt = import_reference(save_reference(ref, tmp_path, "netG_B2A.pth"), "maskcyclegan",
                            tmp_path / "m.safetensors")
    out = build(ckpt, ExportOptions(out=tmp_path / "export", formats=("onnx",), size=(32, 32),
                                    batch=(1, 2, 2), log=lambda *_: None))
    assert read_manifest(out)["signatures"]["default"]["artifacts"]["onnx"]["passed"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images, masks = random_images(2, 32), random_masks(2, 32)
    (got,) = session.run(["translation"], {"image": images.numpy(), "mask": masks.numpy()})
    with torch.no_grad():
        expected = ref(images, masks.expand(-1, 3, -1, -1)).clamp(-1, 1).numpy()
    assert abs(got - expected).max() < 1e-4
    assert read_document(ckpt)["meta"]["direction"] == "BtoA"
