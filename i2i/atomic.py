"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Everything i2i writes for others to read (checkpoints, training state, manifests, TensorRT
plans, translated pictures) goes through here: the bytes go to a temporary file in the target's
own folder (a rename is atomic only within one file system), are flushed to disk with fsync,
and the temporary file is renamed over the target. On any error the temporary file is removed
and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, the file written
    there is fsynced and renamed to `path`. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"))
