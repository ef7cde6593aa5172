"""index.html after a folder translation: a row per picture whose links resolve, every file
name escaped, the files not translated listed with why, and none with --no-html."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

import i2i.runtime.gallery as gallery_module
from i2i.runtime.cli import main as serve
from i2i.runtime.translate_cli import main

from .server_utils import tiny_checkpoint

GOOD = ["a.png", "b.jpg", "<script>.png", "x&y.png", "sp ace#1?.png", "sub/c.png"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


class Page(HTMLParser):
    """The tables of a page as rows of cells; a cell is (text, [img src], [a href])."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[tuple[str, list[str], list[str]]]]] = []
        self.cell: list | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ["", [], []]
            self.tables[-1][-1].append(self.cell)
        elif tag == "img" and self.cell is not None:
            self.cell[1].append(attrs["src"])
        elif tag == "a" and self.cell is not None:
            self.cell[2].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data


def folder(root: Path) -> Path:
    for i, name in enumerate(GOOD):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(i).integers(0, 256, (12 + i, 16, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / name, format="PNG" if ".png" in name else "JPEG")
    (root / "notes.txt").write_text("not a picture")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


def resolved(page_dir: Path, link: str) -> Path:
    """The file a browser opens for a relative link on a page in page_dir."""
    parts = urlsplit(link)
    assert not parts.scheme and not parts.netloc, link
    return (page_dir / unquote(parts.path)).resolve()


def test_the_page_shows_every_picture_and_lists_the_failed(checkpoint, tmp_path, capsys):
    inputs, out = folder(tmp_path / "in"), tmp_path / "out"
    args = [str(inputs), str(out), "--model", str(checkpoint), "--no-progress", "--masks",
            "--recursive"]
    assert main(args) == 1                        # two files failed
    printed = capsys.readouterr().out
    text = (out / "index.html").read_text(encoding="utf-8")
    header, pictures, failed = Page(text).tables
    about = {row[0][0]: row[1][0] for row in header}
    assert about["model"] == "additive" and about["direction"] == "not recorded"
    assert about["checkpoint or export"] == str(checkpoint)
    assert about["resolution"] == "auto"
    assert [cell[0] for cell in pictures[0]] == ["input", "output", "mask", "file"]
    rows = pictures[1:]
    assert sorted(row[3][0] for row in rows) == sorted(GOOD)
    for row in rows:
        name = row[3][0]
        (source,), (made,), (mask,) = row[0][1], row[1][1], row[2][1]
        assert [row[k][2] for k in range(3)] == [[source], [made], [mask]]   # linked to itself
        assert resolved(out, source) == (inputs / name).resolve()
        stem = name.rsplit(".", 1)[0]
        assert resolved(out, made) == (out / f"{stem}.png").resolve()
        assert resolved(out, mask) == (out / f"{stem}.mask.png").resolve()
        assert all(resolved(out, link).is_file() for link in (source, made, mask))
    assert "img{max-width:256px;height:auto}" in text       # shown small, files as written
    # File names are escaped: no tag or bare ampersand of a name reaches the page.
    assert "<script>" not in text and "&lt;script&gt;.png" in text
    assert "x&y" not in text and "x&amp;y.png" in text
    reasons = {row[0][0]: row[1][0] for row in failed[1:]}
    assert set(reasons) == {"notes.txt", "broken.png"}
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert f"failed {inputs / 'broken.png'}: {reasons['broken.png']}" in printed


def test_a_rerun_lists_the_pictures_already_done(checkpoint, tmp_path, capsys):
    inputs, out = folder(tmp_path / "in"), tmp_path / "out"
    (inputs / "notes.txt").unlink()
    (inputs / "broken.png").unlink()
    args = [str(inputs), str(out), "--model", str(checkpoint), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0
    assert "already done 5" in capsys.readouterr().out
    header, pictures = Page((out / "index.html").read_text(encoding="utf-8")).tables
    assert [cell[0] for cell in pictures[0]] == ["input", "output", "file"]    # no masks
    assert sorted(row[2][0] for row in pictures[1:]) == sorted(n for n in GOOD if "/" not in n)


def test_no_html_writes_no_page(checkpoint, tmp_path, capsys):
    inputs = folder(tmp_path / "in")
    assert main([str(inputs), str(tmp_path / "out"), "--model", str(checkpoint),
                 "--no-progress", "--no-html"]) == 1
    assert (tmp_path / "out" / "a.png").is_file()
    assert not (tmp_path / "out" / "index.html").exists()
    assert serve(["--checkpoint", str(checkpoint), "--input-dir", str(inputs), "--output-dir",
                  str(tmp_path / "served"), "--no-progress", "--no-html"]) == 1
    assert (tmp_path / "served" / "a.png").is_file()
    assert not (tmp_path / "served" / "index.html").exists()


def test_a_page_that_cannot_be_written_is_reported(checkpoint, tmp_path, capsys, monkeypatch):
    inputs, out = folder(tmp_path / "in"), tmp_path / "out"
    (inputs / "notes.txt").unlink()
    (inputs / "broken.png").unlink()

    def full_disk(path, text):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(gallery_module, "write_text", full_disk)
    assert main([str(inputs), str(out), "--model", str(checkpoint), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "translated 5, already done 0, failed 1" in printed
    assert f"failed {out / 'index.html'}: could not write it (No space left on device)" in printed
    assert (out / "a.png").is_file() and not (out / "index.html").exists()
