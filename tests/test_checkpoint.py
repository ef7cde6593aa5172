"""Tests for the i2i checkpoint contract: round trips, atomic writes, no unpickling, errors."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import i2i.models.checkpoint as checkpoint_module
from i2i.models import (
    MODELS,
    CheckpointError,
    build,
    get_entry,
    load,
    make_config,
    read_document,
    save_checkpoint,
)

from .test_models import TINY  # the tiny configuration of every model, in one place


def tiny(name: str, seed: int = 0) -> tuple[nn.Module, object]:
    """(module with random weights, config); BN affine and running stats are non-trivial."""
    assert name in TINY, f"model {name!r} has no tiny configuration in tests/test_models.py"
    config = make_config(name, TINY[name])
    torch.manual_seed(seed)
    module = build(name, config)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    return module, config


def size_for(name: str, config: object) -> int:
    return max(16, get_entry(name).spec(config).size_multiple)


def outputs(name: str, module: nn.Module, size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """The module's outputs for one random tensor per spec input, with the input's channel count
    and range (lomit: image and exemplar; maskcyclegan: image and a (N, 1, H, W) mask)."""
    spec = get_entry(name).spec(module.config)
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for i in spec.inputs:
        low, high = i.range
        unit = torch.rand(2, i.shape[1], size, size, generator=generator)
        inputs[i.name] = low + (high - low) * unit
    with torch.no_grad():
        return module(**inputs)


def write_raw(path: Path, tensors: dict[str, torch.Tensor], document: dict | None) -> Path:
    """A safetensors file written without i2i's helpers (metadata only when a document is given)."""
    metadata = None if document is None else {"i2i": json.dumps(document)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """A valid cyclegan checkpoint: (path, its state_dict, its document)."""
    module, config = tiny("cyclegan")
    path = save_checkpoint(tmp_path / "g.safetensors", "cyclegan", config, module.state_dict())
    return path, module.state_dict(), read_document(path)


# ---------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_then_load_round_trips(name: str, tmp_path: Path) -> None:
    module, config = tiny(name)
    module.eval()
    meta = {"loss_weights": {"lambda_r": 0.1}, "data": {"kind": "synthetic"}}
    path = save_checkpoint(tmp_path / f"{name}.safetensors", name, config, module.state_dict(),
                           step=123, meta=meta)
    assert path == tmp_path / f"{name}.safetensors"

    loaded, spec = load(path)
    assert type(loaded) is type(module)
    assert not any(m.training for m in loaded.modules()), "load must return an eval-mode module"
    assert spec == get_entry(name).spec(config)
    assert loaded.config == config
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    size = size_for(name, config)
    expected, got = outputs(name, module, size), outputs(name, loaded, size)
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)

    document = read_document(path)
    assert document["model"] == name
    assert document["config"] == asdict(config)
    for field, value in TINY[name].items():
        assert document["config"][field] == value
    assert document["step"] == 123
    assert document["meta"] == meta
    assert document["versions"]["torch"] == torch.__version__
    assert document["format"] == "i2i-checkpoint" and document["format_version"] == 1


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    module, config = tiny("cyclegan")
    save_checkpoint(tmp_path / "a.safetensors", "cyclegan", config, module.state_dict())
    save_checkpoint(tmp_path / "a.safetensors", "cyclegan", config, module.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_save_over_an_existing_file_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    first, config = tiny("cyclegan", seed=0)
    second, _ = tiny("cyclegan", seed=1)
    save_checkpoint(path, "cyclegan", config, first.state_dict(), step=1)
    save_checkpoint(path, "cyclegan", config, second.state_dict(), step=2)
    loaded, _ = load(path)
    assert read_document(path)["step"] == 2
    key = "generator.head.weight"
    assert not torch.equal(first.state_dict()[key], second.state_dict()[key])
    assert torch.equal(loaded.state_dict()[key], second.state_dict()[key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


def test_failed_save_keeps_the_old_file_and_no_temporary(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.safetensors"
    module, config = tiny("cyclegan")
    save_checkpoint(path, "cyclegan", config, module.state_dict(), step=1)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")      # a partial write, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, "cyclegan", config, module.state_dict(), step=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


# ---------------------------------------------------------------------------------------------
# No unpickling


def test_load_never_unpickles(saved, monkeypatch: pytest.MonkeyPatch) -> None:
    path, state, _ = saved

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(AssertionError):                # the patches are live
        torch.load(path)
    loaded, _ = load(path)
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothere\.safetensors does not exist"):
        load(tmp_path / "nothere.safetensors")


@pytest.mark.parametrize("keep", ["half", 10])
def test_truncated_file(saved, keep) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    size = len(data) // 2 if keep == "half" else keep
    path.write_bytes(data[:size])
    with pytest.raises(CheckpointError,
                       match=rf"is not a readable i2i checkpoint \({size} bytes;.*truncated"):
        load(path)


def test_foreign_safetensors_without_i2i_metadata(saved, tmp_path: Path) -> None:
    _, state, _ = saved
    path = write_raw(tmp_path / "foreign.safetensors", state, None)
    with pytest.raises(CheckpointError,
                       match=r"is a safetensors file but not an i2i file.*import_reference"):
        load(path)


def test_pickled_pth_is_refused(saved, tmp_path: Path) -> None:
    _, state, _ = saved
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"latest_net_G\.pth is not a readable i2i "
                                              r"checkpoint.*of another format"):
        load(path)


def test_unknown_model_in_document(saved, tmp_path: Path) -> None:
    _, state, document = saved
    path = write_raw(tmp_path / "x.safetensors", state, {**document, "model": "cyclegn"})
    with pytest.raises(CheckpointError,
                       match=r"x\.safetensors: unknown model 'cyclegn' \(did you mean "
                             r"'cyclegan'\?\); known: "):
        load(path)


def test_unknown_config_field(saved, tmp_path: Path) -> None:
    _, state, document = saved
    config = {**document["config"], "attention": True}
    path = write_raw(tmp_path / "x.safetensors", state, {**document, "config": config})
    with pytest.raises(CheckpointError,
                       match=r"config fields \['attention'\] are unknown to model 'cyclegan'"):
        load(path)


def test_missing_and_unexpected_keys_are_both_listed(saved, tmp_path: Path) -> None:
    _, state, document = saved
    state = dict(state)
    del state["generator.blocks.1.conv2.bias"]
    state["generator.extra.weight"] = torch.zeros(3)
    path = write_raw(tmp_path / "x.safetensors", state, document)
    with pytest.raises(CheckpointError,
                       match=r"missing keys \['generator\.blocks\.1\.conv2\.bias'\]; "
                             r"unexpected keys \['generator\.extra\.weight'\]"):
        load(path)


def test_shape_mismatch(saved, tmp_path: Path) -> None:
    _, state, document = saved
    state = {**state, "generator.head.weight": torch.zeros(3, 4, 5, 5)}
    path = write_raw(tmp_path / "x.safetensors", state, document)
    with pytest.raises(CheckpointError,
                       match=r"shape mismatches generator\.head\.weight: file \(3, 4, 5, 5\) "
                             r"vs model \(3, 4, 7, 7\)"):
        load(path)


def test_wrong_format_version(saved, tmp_path: Path) -> None:
    _, state, document = saved
    path = write_raw(tmp_path / "x.safetensors", state, {**document, "format_version": 2})
    with pytest.raises(CheckpointError, match=r"format version 2; this i2i reads version 1"):
        load(path)


def test_other_kind_of_i2i_file(saved, tmp_path: Path) -> None:
    _, state, document = saved
    path = write_raw(tmp_path / "x.safetensors", state, {**document, "format": "i2i-train-state"})
    with pytest.raises(CheckpointError, match=r"of kind 'i2i-train-state', not a model checkpoint"):
        load(path)


def test_metadata_that_is_not_json(saved, tmp_path: Path) -> None:
    _, state, _ = saved
    path = tmp_path / "x.safetensors"
    save_file(dict(state), str(path), metadata={"i2i": "{not json"})
    with pytest.raises(CheckpointError, match=r"its i2i metadata is not valid JSON"):
        load(path)
