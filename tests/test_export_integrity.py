"""Export integrity: artifacts and manifests checked by hash when an engine opens them, clean
errors (the file named, "re-export") for damaged ones, and one file mode for what i2i writes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from i2i.atomic import write_bytes, write_text
from i2i.engines import engine_availability, open_engine
from i2i.export import ExportOptions, build
from i2i.manifest import manifest_digest, sha256, write_manifest
from i2i.runtime.cli import main as serve_main

from .server_utils import tiny_checkpoint


class umask:
    """Set the process umask for a block, then restore it."""

    def __init__(self, mask: int):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *_):
        os.umask(self.old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export folder) written under umask 022: onnx and its Triton repository."""
    folder = tmp_path_factory.mktemp("integrity")
    with umask(0o022):
        checkpoint = tiny_checkpoint(folder)
        out = build(checkpoint, ExportOptions(out=folder / "export", formats=("onnx", "triton"),
                                              batch=(1, 2, 4), log=lambda *_: None))
    return checkpoint, out


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    """A copy of the export to damage."""
    return Path(shutil.copytree(exported[1], tmp_path / "export"))


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# --- file modes ------------------------------------------------------------------------------

def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    with umask(0o022):
        assert mode(write_bytes(tmp_path / "a.bin", b"x")) == 0o644
        assert mode(write_text(tmp_path / "b.txt", "x")) == 0o644
    with umask(0o027):
        assert mode(write_bytes(tmp_path / "c.bin", b"x")) == 0o640


def test_atomic_writes_keep_the_mode_of_the_file_they_replace(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old")
    for kept in (0o640, 0o444):
        target.chmod(kept)
        with umask(0o022):
            write_text(target, "new")
        assert mode(target) == kept and target.read_text() == "new"


def test_a_checkpoint_the_manifest_and_every_exported_file_share_one_mode(exported):
    checkpoint, out = exported
    files = [Path(root) / name for root, _, names in os.walk(out) for name in names]
    assert out / "manifest.json" in files and out / "model.onnx" in files
    assert any(f.name == "config.pbtxt" for f in files)         # the Triton repository too
    modes = {f.relative_to(out).as_posix(): oct(mode(f)) for f in files}
    assert set(modes.values()) == {"0o644"}, modes
    assert mode(checkpoint) == 0o644


# --- artifact hashes -------------------------------------------------------------------------

def test_a_changed_byte_in_model_onnx_is_refused(copy):
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.onnx changed since export.*re-export"):
        open_engine("onnxruntime", export_dir=copy)
    reason = engine_availability("onnxruntime", copy, None)
    assert "model.onnx" in reason and "changed since export" in reason


def test_an_artifact_without_a_recorded_sha256_is_refused(copy):
    manifest = manifest_of(copy)
    del manifest["signatures"]["default"]["artifacts"]["onnx"]["sha256"]
    write_manifest(copy / "manifest.json", manifest)               # a consistent manifest
    with pytest.raises(ValueError, match=r"model\.onnx: its manifest entry has no sha256.*"
                                         r"re-export"):
        open_engine("onnxruntime", export_dir=copy)


def test_the_untouched_export_opens_and_records_its_manifest_digest(exported):
    manifest = manifest_of(exported[1])
    assert manifest["manifest_sha256"] == manifest_digest(manifest)
    assert open_engine("onnxruntime", export_dir=exported[1]).spec.model == "additive"


# --- the manifest's own hash -----------------------------------------------------------------

@pytest.mark.parametrize("engine", ["onnxruntime", "eager"])
def test_a_manifest_with_an_altered_checkpoint_sha256_is_refused(exported, copy, engine):
    manifest = manifest_of(copy)
    manifest["checkpoint"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    checkpoint = exported[0] if engine == "eager" else None
    with pytest.raises(ValueError, match=r"manifest\.json changed since export.*re-export"):
        open_engine(engine, export_dir=copy, checkpoint=checkpoint)


def test_a_manifest_written_before_its_digest_still_opens(copy):
    manifest = manifest_of(copy)
    del manifest["manifest_sha256"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert open_engine("onnxruntime", export_dir=copy).spec.model == "additive"


# --- damaged manifests and artifacts ---------------------------------------------------------

@pytest.mark.parametrize("key", ["signatures", "size", "batch", "model", "size_multiple",
                                 "checkpoint"])
def test_a_manifest_missing_a_key_names_it_and_asks_for_a_re_export(copy, key):
    manifest = manifest_of(copy)
    del manifest[key]
    write_manifest(copy / "manifest.json", manifest)
    with pytest.raises(ValueError, match=rf"manifest\.json is incomplete or damaged "
                                         rf"\(no '{key}'\).*re-export"):
        open_engine("onnxruntime", export_dir=copy)


def test_a_manifest_with_a_broken_signature_is_refused(copy):
    manifest = manifest_of(copy)
    del manifest["signatures"]["default"]["inputs"]
    write_manifest(copy / "manifest.json", manifest)
    with pytest.raises(ValueError, match=r"manifest\.json is incomplete or damaged.*re-export"):
        open_engine("onnxruntime", export_dir=copy)


@pytest.mark.parametrize("damage", ["truncated", "binary", "a list"])
def test_a_manifest_that_is_not_json_is_refused(copy, damage):
    path = copy / "manifest.json"
    text = path.read_bytes()
    path.write_bytes({"truncated": text[: len(text) // 2], "binary": b"\xff\xfe\x00garbage",
                      "a list": b"[1, 2]"}[damage])
    with pytest.raises(ValueError, match=r"manifest\.json is not .*re-export"):
        open_engine("onnxruntime", export_dir=copy)


def corrupt_onnx(folder: Path) -> None:
    """Garbage in model.onnx, with its sha256 recorded: only the content is bad."""
    path = folder / "model.onnx"
    path.write_bytes(b"this is not an ONNX graph" * 40)
    manifest = manifest_of(folder)
    manifest["signatures"]["default"]["artifacts"]["onnx"]["sha256"] = sha256(path)
    write_manifest(folder / "manifest.json", manifest)


def test_a_corrupt_onnx_file_with_a_matching_hash_is_a_clean_error(copy):
    corrupt_onnx(copy)
    with pytest.raises(RuntimeError, match=r"model\.onnx .*corrupt.*re-export"):
        open_engine("onnxruntime", export_dir=copy)


@pytest.mark.parametrize("damage", ["no size", "corrupt onnx", "not json"])
def test_i2i_serve_exits_2_with_the_file_and_re_export(copy, capsys, damage):
    if damage == "no size":
        manifest = manifest_of(copy)
        del manifest["size"]
        write_manifest(copy / "manifest.json", manifest)
        named = "manifest.json"
    elif damage == "corrupt onnx":
        corrupt_onnx(copy)
        named = "model.onnx"
    else:
        (copy / "manifest.json").write_text("{not json")
        named = "manifest.json"
    assert serve_main(["--export", str(copy), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-serve: error: "), err
    assert named in err and "re-export" in err and "Traceback" not in err
