"""log.jsonl, the loss log of a run: one JSON object a line, written so a crash tears at most one.

Each record goes out as a single write of its bytes, ending in a newline, on an unbuffered file:
a crash (a kill, a full disk, a power cut) can cut the line being written, never an earlier one.
Readers therefore drop a last line that is not valid JSON (with a warning naming the file), and
treat any other unreadable line as damage they cannot guess past: an error naming the file and
the line.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import BinaryIO

from ..atomic import write_text


class LogError(ValueError):
    """log.jsonl has a damaged line that is not the last one."""


def read_log(path: str | Path) -> list[dict]:
    """The records of a log.jsonl; a torn last line is dropped with a warning."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if i == len(numbered) - 1:
                warnings.warn(f"{path}: dropping its last line ({number}), cut short by an "
                              f"interrupted write: {line[:80]!r}", stacklevel=2)
                break
            raise LogError(_damaged(path, number, err)) from err
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise LogError(_damaged(path, number, "not a record with an integer 'step'"))
        records.append(record)
    return records


def append_record(log: BinaryIO, record: dict) -> None:
    """Append one record as one line to `log`, a file opened with open(path, "ab", buffering=0):
    one write call of the whole line (a short write, which regular files do not make short of
    a full disk, is finished by further calls)."""
    data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
    while data:
        written = log.write(data)
        data = data[written:]
    log.flush()


def truncate_log(path: Path, step: int) -> None:
    """Keep the records up to `step` (those written before the state a run resumes from);
    the file is rewritten atomically, so a crash now leaves the old log or the new one."""
    if step == 0 or not path.exists():
        write_text(path, "")
        return
    kept = [r for r in read_log(path) if r["step"] <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _damaged(path: Path, number: int, err: object) -> str:
    return (f"{path}, line {number}: not a log record ({err}). Only the last line of a log can "
            "be cut by a crash; this one is damaged in the middle: repair or delete that line, "
            "or delete the file (training resumes from its state without it, but the loss "
            "history is lost)")
