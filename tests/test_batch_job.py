"""Offline folder translation through the engine and batcher."""

from __future__ import annotations

import numpy as np
from PIL import Image

from i2i.runtime.cli import main

from .server_utils import tiny_checkpoint


def make_folder(root, sizes):
    root.mkdir()
    g = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        rgb = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "notes.txt").write_text("not an image")


def test_folder_translation_names_outputs_skips_bad_files_and_resumes(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    make_folder(tmp_path / "in", [(20, 24), (33, 17), (16, 16), (40, 40), (9, 13)])
    args = ["--checkpoint", str(ckpt), "--input-dir", str(tmp_path / "in"),
            "--output-dir", str(tmp_path / "out"), "--masks", "--no-progress"]
    assert main(args) == 1                                   # two files failed
    printed = capsys.readouterr().out
    assert "translated 5, already done 0, failed 2" in printed
    assert "broken.png" in printed and "notes.txt" in printed
    for i, size in enumerate([(20, 24), (33, 17), (16, 16), (40, 40), (9, 13)]):
        assert Image.open(tmp_path / "out" / f"img{i}.png").size == size
        assert Image.open(tmp_path / "out" / f"img{i}.mask.png").size == size
    stamp = (tmp_path / "out" / "img0.png").stat().st_mtime_ns
    assert main(args) == 1                                   # re-run: nothing redone
    assert "translated 0, already done 5, failed 2" in capsys.readouterr().out
    assert (tmp_path / "out" / "img0.png").stat().st_mtime_ns == stamp


def test_folder_translation_errors(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    assert main(["--checkpoint", str(ckpt), "--input-dir", str(tmp_path / "none")]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "give --export DIR or --checkpoint PATH" in capsys.readouterr().err


def test_missing_input_folder_is_a_clear_error(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    assert main(["--checkpoint", str(ckpt), "--input-dir", str(tmp_path / "none"),
                 "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "input folder" in capsys.readouterr().err
