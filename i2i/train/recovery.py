"""What a crash can leave in a run folder, and how a start or a --resume deals with each case.

The loop writes, at each checkpoint step N, first `step_N.train.safetensors` (the state),
then `step_N.safetensors` (the checkpoint), then, for recipes with a B -> A generator of the
same model, `step_N.BtoA.safetensors` (its checkpoint; names in i2i/runs.py), then removes the
older states; each file is written atomically (a temporary `.NAME.XXXX.tmp` beside it, renamed
when whole). A crash can therefore leave:

- a temporary file: removed at the next start or resume;
- state N without checkpoint N, or without the B -> A checkpoint N: --resume continues from
  state N and writes the missing ones (a run of an older i2i, which wrote no B -> A checkpoint,
  gets one at the step it resumes from);
- state N beside older states: --resume takes the newest and removes the older;
- a checkpoint (of either direction) newer than the newest state (a run written by an older
  i2i, which wrote the checkpoint first, or a state deleted by hand): --resume removes it,
  with a warning, and trains to that step again;
- a torn last line in log.jsonl (see runlog.py): dropped, with a warning.

A state that cannot be read is an error naming it and saying what to do; nothing is guessed.
Warnings name the caller of i2i.train.loop.train (stacklevel 4: here, _train, train).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from ..models.checkpoint import CheckpointError, read_checkpoint
from ..runs import DIRECTIONS, parse_name, step_name

T = TypeVar("T")


def step_files(run: Path, states: bool = False, direction: str = "AtoB"
               ) -> list[tuple[int, Path]]:
    """(step, path) of the run's training states (states=True) or its checkpoints of
    `direction` (AtoB: the run's translator; BtoA: its reverse generator), by step."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    kind = "state" if states else direction
    found = []
    for path in folder.iterdir():
        parsed = parse_name(path.name)
        if parsed and parsed[1] == kind and path.is_file():
            found.append((parsed[0], path))
    return sorted(found)


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    """The run's checkpoints of both directions, by step."""
    return sorted(f for d in DIRECTIONS for f in step_files(run, direction=d))


def remove_partial_writes(run: Path) -> None:
    """Remove the temporary files of atomic writes an interrupted run left behind."""
    for folder in (run, run / "checkpoints", run / "samples"):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                warnings.warn(f"removing {path}, a partial write left by an interrupted run",
                              stacklevel=4)
                path.unlink(missing_ok=True)


def state_to_resume(run: Path) -> Path:
    """The newest training state of `run`; an error saying what to do when there is none."""
    states = step_files(run, states=True)
    if states:
        return states[-1][1]
    folder = run / "checkpoints"
    if _checkpoints(run):
        then = (f"it holds checkpoints but no state to continue them from: delete {folder} "
                "(keep any checkpoint you want elsewhere first) to start the run anew there, "
                "or choose another --out")
    else:
        then = "start the run without --resume"
    raise CheckpointError(f"--resume: no training state under {folder}; {then}")


def check_fresh(run: Path) -> None:
    """A new run may not start over an earlier run's checkpoints or state."""
    folder = run / "checkpoints"
    states = step_files(run, states=True)
    if states:
        raise FileExistsError(f"{run} already holds checkpoints (training state "
                              f"{states[-1][1].name}); pass --resume to continue it or choose "
                              "another --out")
    if _checkpoints(run):
        raise FileExistsError(f"{run} already holds checkpoints but no training state to "
                              f"resume from: delete {folder} (keep any checkpoint you want "
                              "elsewhere first) to start the run anew there, or choose "
                              "another --out")


def read_state(path: Path, reader: Callable[..., T], *args) -> T:
    """reader(path, *args), with any failure to read the state made an error that names the
    file and says how to go on."""
    try:
        return reader(path, *args)
    except torch.OutOfMemoryError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError,
            OSError) as err:
        older = [p for _, p in step_files(path.parent.parent, states=True) if p != path]
        if older:
            then = f"delete it to resume from the earlier state {older[-1].name}"
        else:
            then = (f"no earlier state is left: start the run anew (delete {path.parent}, "
                    "keeping any checkpoint you want elsewhere first, or choose another --out)")
        raise CheckpointError(f"{path}: the training state --resume continues from cannot be "
                              f"read ({err}). To go on, {then}") from err


def settle_checkpoints(run: Path, step: int, writers: Mapping[str, Callable[[Path], Path]]
                       ) -> None:
    """After resuming from the state of `step`: remove checkpoints past it, write (via
    `writers[direction](path)`) each of its own checkpoints that is missing or unreadable, and
    remove the older states a crash before their removal left."""
    for earlier, path in step_files(run, states=True):
        if earlier < step:
            path.unlink()
    for later, path in _checkpoints(run):
        if later > step:
            warnings.warn(f"removing {path}: it is newer than the newest training state (step "
                          f"{step}), left by a run interrupted before saving its state; "
                          "training reaches that step again", stacklevel=4)
            path.unlink()
    for direction, write in writers.items():
        checkpoint = run / "checkpoints" / step_name(step, direction)
        if not checkpoint.exists():
            warnings.warn(f"writing {checkpoint} from its training state: the run was "
                          "interrupted before writing it", stacklevel=4)
            write(checkpoint)
            continue
        try:
            read_checkpoint(checkpoint)
        except CheckpointError as err:
            warnings.warn(f"rewriting {checkpoint} from its training state: it cannot be read "
                          f"({err})", stacklevel=4)
            write(checkpoint)
