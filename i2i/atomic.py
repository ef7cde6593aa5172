"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Everything i2i writes for others to read (checkpoints, training state, manifests, TensorRT
plans, translated pictures) goes through here: the bytes go to a temporary file in the target's
own folder (a rename is atomic only within one file system), are flushed to disk with fsync,
and the temporary file is renamed over the target. On any error the temporary file is removed
and the target is left as it was.

The file gets the mode a plain `open(path, "w")` would give it (0666 less the umask), or the
mode of the file it replaces, so that an export folder's files all share one mode (mkstemp
alone makes them 0600, readable by their owner only).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def new_file_mode(path: str | Path) -> int:
    """The mode a write to `path` should leave: the existing file's, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, the file written
    there is fsynced, given its mode (new_file_mode) and renamed to `path`. The folder is
    created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # after the block (a writer may have recreated tmp) and the fsync (a read-only mode
        # kept from the replaced file would refuse "rb+")
        os.chmod(tmp, new_file_mode(path))
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
