"""index.html: a page beside a folder translation to look through it in a browser.

A header says what made the outputs (model, direction, engine, the checkpoint or export given,
the resolution policy, the mask and knobs); a table has one row per input translated or already
done (input | output | mask, where the run writes masks | file name), every picture the file on
disk behind a relative link, shown at most 256 pixels wide by the browser (nothing is re-encoded);
a second table lists the files not translated, with the reason. File names are user data: every
one is escaped for HTML, and its link percent-encoded. The page is written atomically, so a
reader never sees half of it; every row is listed, however large the folder (it is only text).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..atomic import write_text

NAME = "index.html"
MAX_WIDTH = 256                     # pixels; the browser scales, the files stay as written

_STYLE = ("body{font-family:sans-serif;margin:1em} "
          f"img{{max-width:{MAX_WIDTH}px;height:auto}} "
          "td,th{padding:4px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top} "
          "table{border-collapse:collapse}")


@dataclass(frozen=True)
class Row:
    input: Path                     # the input file
    output: Path                    # its translation
    mask: Path | None               # its mask file where the run writes masks


def write_gallery(output_dir: Path, input_dir: Path, header: dict[str, str], rows: list[Row],
                  failed: list[tuple[Path, str]], masks: bool) -> Path:
    """Write output_dir/index.html for `rows` (in the order given) and the `failed` inputs
    (path, reason), each named relative to input_dir; `masks` adds the mask column. Returns
    its path."""
    output_dir, input_dir = Path(output_dir), Path(input_dir)
    lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
             f"<title>{_text(header.get('model', 'i2i'))} translations</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{_text(header.get('model', ''))} translations</h1>", "<table>"]
    lines += [f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in header.items()]
    lines += ["</table>", f"<p>{len(rows)} translated (now or before), {len(failed)} not "
              "translated</p>",
              "<table>", "<tr><th>input</th><th>output</th>"
              + ("<th>mask</th>" if masks else "") + "<th>file</th></tr>"]
    for row in rows:
        cells = [row.input, row.output] + ([row.mask] if masks else [])
        lines.append("<tr>" + "".join(_picture(output_dir, p) for p in cells)
                     + f"<td>{_text(_shown(input_dir, row.input))}</td></tr>")
    lines.append("</table>")
    if failed:
        lines += ["<h2>Not translated</h2>", "<table>", "<tr><th>file</th><th>why</th></tr>"]
        lines += [f"<tr><td>{_text(_shown(input_dir, path))}</td><td>{_text(reason)}</td></tr>"
                  for path, reason in failed]
        lines.append("</table>")
    lines.append("</body></html>")
    return write_text(output_dir / NAME, "\n".join(lines) + "\n")


def _picture(output_dir: Path, path: Path | None) -> str:
    """A table cell showing `path` (linked to the file), or an empty cell without a file."""
    if path is None or not path.is_file():
        return "<td></td>"
    link = html.escape(_link(output_dir, path), quote=True)
    alt = html.escape(path.name, quote=True)
    return f'<td><a href="{link}"><img src="{link}" alt="{alt}" loading="lazy"></a></td>'


def _link(output_dir: Path, path: Path) -> str:
    """The relative URL of `path` from the page, each part percent-encoded (#, ?, %, spaces)."""
    relative = Path(os.path.relpath(path.resolve(), output_dir.resolve()))
    return "/".join(quote(part, safe="") for part in relative.parts)


def _shown(input_dir: Path, path: Path) -> str:
    """How an input is named on the page: its path inside the input folder."""
    try:
        return Path(path).relative_to(input_dir).as_posix()
    except ValueError:
        return str(path)


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)
