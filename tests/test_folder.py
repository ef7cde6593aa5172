"""Folder translation under hostile input and faults: a re-run verifies what it skips (a
truncated, corrupt or wrong-size output is redone), a failed write (a full disk) leaves nothing
partial and is redone on the next run, every input gets its own output files, and the input
folder is refused as the output folder."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import i2i.runtime.folder as folder_module
from i2i.atomic import atomic_path
from i2i.engines import open_engine
from i2i.runtime.folder import FolderOptions, output_names, translate_folder
from i2i.runtime.translate_cli import main

from .server_utils import tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def pictures(root: Path, names: list[str]) -> Path:
    """One small photo per name, each of its own size."""
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(i).integers(0, 256, (12 + i, 16 + 2 * i, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / name, format="PNG" if ".png" in name else "JPEG")
    return root


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_rerun_redoes_truncated_corrupt_and_wrong_size_outputs(checkpoint, tmp_path, capsys):
    names = [f"img{i}.png" for i in range(6)]
    inputs, out = pictures(tmp_path / "in", names), tmp_path / "out"
    args = [str(inputs), str(out), "--model", str(checkpoint), "--no-progress"]
    assert main(args) == 0
    assert "translated 6, already done 0, failed 0" in capsys.readouterr().out

    (out / "img0.png").write_bytes((out / "img0.png").read_bytes()[:200])
    (out / "img1.png").write_bytes(b"garbage " * 100)
    untouched = (out / "img5.png").stat().st_mtime_ns
    assert main(args) == 0
    assert "translated 2, already done 4, failed 0" in capsys.readouterr().out
    for i in (0, 1):
        with Image.open(out / f"img{i}.png") as made:
            made.load()
            assert made.size == Image.open(inputs / f"img{i}.png").size
    assert (out / "img5.png").stat().st_mtime_ns == untouched

    # Header and stamp intact, pixels cut off: the stamp alone would pass it.
    whole = (out / "img2.png").read_bytes()
    (out / "img2.png").write_bytes(whole[:len(whole) // 2])
    # A complete PNG with the right stamp at the wrong size.
    with Image.open(out / "img3.png") as made:
        stamp = made.text["i2i"]
        small = made.convert("RGB").resize((5, 5))
    info = PngImagePlugin.PngInfo()
    info.add_text("i2i", stamp)
    small.save(out / "img3.png", pnginfo=info)
    # A changed input: its old output no longer records it.
    Image.new("RGB", (30, 20), "red").save(inputs / "img4.png")
    assert main(args) == 0
    assert "translated 3, already done 3, failed 0" in capsys.readouterr().out
    assert Image.open(out / "img3.png").size == Image.open(inputs / "img3.png").size
    assert Image.open(out / "img4.png").size == (30, 20)
    assert json.loads(Image.open(out / "img4.png").text["i2i"])["size"] == [30, 20]
    assert main(args) == 0
    assert "translated 0, already done 6, failed 0" in capsys.readouterr().out


def test_a_full_disk_fails_those_files_whole_and_a_rerun_redoes_them(checkpoint, tmp_path,
                                                                     capsys, monkeypatch):
    names = [f"img{i}.png" for i in range(5)]
    inputs, out = pictures(tmp_path / "in", names), tmp_path / "out"
    args = [str(inputs), str(out), "--model", str(checkpoint), "--no-progress", "--masks",
            "--no-html"]                       # pictures only: test_gallery.py has the page
    real = folder_module.write_bytes

    def full_disk(path, data):
        if Path(path).name in ("img1.png", "img3.mask.png"):
            with atomic_path(path) as tmp:        # half the bytes land, then the disk is full
                tmp.write_bytes(data[:len(data) // 2])
                raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(folder_module, "write_bytes", full_disk)
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "translated 3, already done 0, failed 2" in printed
    assert "No space left on device" in printed and "make room on the disk" in printed
    assert "failed " + str(inputs / "img1.png") in printed
    assert "failed " + str(inputs / "img3.png") in printed
    # Nothing partial, no temporary file: img1 has no output, img3 its whole translation only.
    assert files(out) == {f"img{i}{end}" for i in (0, 2, 4) for end in (".png", ".mask.png")
                          } | {"img3.png"}
    for name in files(out):
        with Image.open(out / name) as made:
            made.load()

    monkeypatch.setattr(folder_module, "write_bytes", real)
    assert main(args) == 0
    assert "translated 2, already done 3, failed 0" in capsys.readouterr().out
    assert files(out) == {f"img{i}{end}" for i in range(5) for end in (".png", ".mask.png")}


def test_every_input_writes_its_own_files(checkpoint, tmp_path, capsys):
    inputs = pictures(tmp_path / "in", ["a.png", "a.jpg", "a.png.png", "x.png", "x.mask.png"])
    out = tmp_path / "out"
    args = [str(inputs), str(out), "--model", str(checkpoint), "--no-progress", "--masks",
            "--no-html"]                       # pictures only: test_gallery.py has the page
    assert main(args) == 0
    assert "translated 5, already done 0, failed 0" in capsys.readouterr().out
    made = files(out)
    assert len(made) == 10
    assert made == {f"{stem}{end}" for stem in ("a.jpg", "a.png", "a.png.png", "x.mask", "x.png")
                    for end in (".png", ".mask.png")}
    for name in made:                          # each output at its own input's size
        with Image.open(out / name) as picture:
            record = json.loads(picture.text["i2i"])
            assert list(picture.size) == record["size"]
    assert main(args) == 0
    assert "translated 0, already done 5, failed 0" in capsys.readouterr().out


def test_output_names_keep_simple_names_and_never_collide(tmp_path):
    root = tmp_path

    def names(rels, masks=False):
        got = output_names([root / r for r in rels], root, masks)
        return {k.relative_to(root).as_posix(): v.as_posix() for k, v in got.items()}

    assert names(["cat.jpg", "dog.png"], masks=True) == {"cat.jpg": "cat", "dog.png": "dog"}
    # Without --masks, x.png and x.mask.png write different files: simple names stay.
    assert names(["x.png", "x.mask.png"]) == {"x.png": "x", "x.mask.png": "x.mask"}
    assert names(["x.png", "x.mask.png"], masks=True) == {"x.png": "x.png", "x.mask.png": "x.mask"}
    # Case-insensitive disks: Cat.png and cat.jpg would write one file.
    assert names(["Cat.png", "cat.jpg"]) == {"Cat.png": "Cat.png", "cat.jpg": "cat.jpg"}
    # A file where a mirrored sub-folder goes, and ~N when the full name is taken too.
    assert names(["a.png", "a.png/b.png"]) == {"a.png": "a.png", "a.png/b.png": "a.png/b"}
    assert names(["a.png", "a.jpg", "a.png.png/b.png"]) == {
        "a.png": "a.png~2", "a.jpg": "a.jpg", "a.png.png/b.png": "a.png.png/b"}
    assert names(["a.png", "a.jpg", "a.png.png"], masks=True) == {
        "a.png": "a.png", "a.jpg": "a.jpg", "a.png.png": "a.png.png"}
    # Deterministic: the same names whatever order the inputs come in.
    rels = ["b.jpg", "b.png", "b.png.png", "b.mask.png", "B.gif"]
    assert names(rels, True) == names(list(reversed(rels)), True)
    assert len({v.casefold() for v in names(rels, True).values()}) == len(rels)


def test_the_input_folder_is_refused_as_the_output_folder(checkpoint, tmp_path, capsys):
    inputs = pictures(tmp_path / "in", ["one.png"])
    args = ["--model", str(checkpoint), "--no-progress"]
    assert main([str(inputs), str(inputs), *args]) == 2
    err = capsys.readouterr().err
    assert "is the input folder" in err and "choose another output folder" in err
    assert main([str(inputs), str(inputs / "out"), "--recursive", *args]) == 2
    err = capsys.readouterr().err
    assert "inside the input folder" in err and "choose another output folder" in err
    assert not (inputs / "out").exists()
    assert main([str(inputs), str(inputs / "." / "sub" / ".."), *args]) == 2   # same folder
    capsys.readouterr()
    # Without --recursive a sub-folder of the input is not read: allowed.
    assert main([str(inputs), str(inputs / "out"), *args]) == 0
    assert "translated 1, already done 0, failed 0" in capsys.readouterr().out
    (tmp_path / "taken").write_text("a file")
    assert main([str(inputs), str(tmp_path / "taken"), *args]) == 2
    assert "could not create the output folder" in capsys.readouterr().err

    engine = open_engine("eager", checkpoint=checkpoint, device="cpu")
    with pytest.raises(ValueError, match="choose another output folder"):
        translate_folder(engine, inputs, inputs, FolderOptions(progress=False))
    with pytest.raises(ValueError, match="inside the input folder"):
        translate_folder(engine, inputs, inputs / "deep" / "out",
                         FolderOptions(recursive=True, progress=False))
    assert not (inputs / "deep").exists()


def test_the_stamp_is_json_with_the_input_hash(checkpoint, tmp_path, capsys):
    inputs, out = pictures(tmp_path / "in", ["one.png"]), tmp_path / "out"
    assert main([str(inputs), str(out), "--model", str(checkpoint), "--no-progress"]) == 0
    record = json.loads(Image.open(io.BytesIO((out / "one.png").read_bytes())).text["i2i"])
    assert record["input"] == hashlib.sha256((inputs / "one.png").read_bytes()).hexdigest()
    assert record["model"] == "additive" and record["size"] == [16, 12]
