"""A training run a crash, a failed write or a damaged file cannot leave unrecoverable.

Each interrupted run is resumed and compared, tensor by tensor, with the same steps trained
without interruption (the pattern of test_train.py's resume test, same tiny configuration).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import i2i.train.loop as loop
from i2i.models import read_document
from i2i.models.checkpoint import CheckpointError, read_checkpoint, save_tensors
from i2i.train.cli import main
from i2i.train.loop import TrainOptions, logged_seconds, train
from i2i.train.runlog import LogError, append_record, read_log

TINY = dict(size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2, progress=False,
            sample_every=3, checkpoint_every=3, log_every=1, steps=6, decay_start=0.3)
CLI = ["--size", "16", "--batch-size", "2", "--ngf", "4", "--n-blocks", "1", "--ndf", "4",
       "--disc-layers", "2", "--sample-every", "3", "--checkpoint-every", "3", "--log-every",
       "1", "--decay-start", "0.3", "--no-progress"]


def tiny(tmp_path: Path, name: str, **overrides) -> TrainOptions:
    return TrainOptions(out=str(tmp_path / name), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run folder of six uninterrupted steps."""
    return train(tiny(tmp_path_factory.mktemp("straight"), "run")).parent.parent


def assert_same_run(expected: Path, got: Path, steps=(3, 6)) -> None:
    for step in steps:
        for end in (".safetensors", ".BtoA.safetensors"):     # both generators (additive)
            name = f"checkpoints/step_{step:06d}{end}"
            a, b = load_file(expected / name), load_file(got / name)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), name
            assert read_document(expected / name) == read_document(got / name)
    name = "checkpoints/step_000006.train.safetensors"
    a, b = load_file(expected / name), load_file(got / name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_log(got / "log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (got / "checkpoints").glob("*.train.safetensors")) == [
        "step_000006.train.safetensors"]
    assert not list(got.rglob("*.tmp"))


def fail_at(monkeypatch, writer: str, step: int) -> None:
    """Make loop's `writer` (save_state or save_checkpoint) fail when asked for `step`."""
    real = getattr(loop, writer)

    def failing(path, *args, **kwargs):
        if f"step_{step:06d}." in Path(path).name:
            raise OSError(28, "No space left on device (simulated)")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(loop, writer, failing)


@pytest.mark.parametrize("writer,step", [("save_state", 3), ("save_checkpoint", 3),
                                         ("save_state", 6), ("save_checkpoint", 6)])
def test_a_failed_write_is_resumed_to_the_same_run(tmp_path, monkeypatch, straight, writer,
                                                   step):
    with monkeypatch.context() as patched:
        fail_at(patched, writer, step)
        with pytest.raises(OSError, match="simulated"):
            train(tiny(tmp_path, "run"))
    run = tmp_path / "run"
    if writer == "save_state" and step == 3:
        # Nothing resumable was written: --resume says so, and a new start is not refused.
        with pytest.raises(CheckpointError, match="start the run without --resume"):
            train(tiny(tmp_path, "run"), resume=True)
        train(tiny(tmp_path, "run"))
    elif writer == "save_checkpoint":          # the state is there; its checkpoint is not
        with pytest.warns(UserWarning, match=rf"writing .*step_{step:06d}\.safetensors from "
                          "its training state"):
            train(tiny(tmp_path, "run"), resume=True)
    else:
        train(tiny(tmp_path, "run"), resume=True)
    assert_same_run(straight, run)


def test_the_state_is_written_before_its_checkpoint(tmp_path, monkeypatch):
    order = []
    for writer in ("save_state", "save_checkpoint"):
        real = getattr(loop, writer)
        monkeypatch.setattr(loop, writer, lambda path, *a, real=real, **k: (
            order.append(Path(path).name), real(path, *a, **k))[1])
    train(tiny(tmp_path, "run", steps=3))
    assert order == ["step_000003.train.safetensors", "step_000003.safetensors",
                     "step_000003.BtoA.safetensors"]


def test_a_checkpoint_newer_than_the_newest_state_is_removed_and_retrained(tmp_path,
                                                                         straight):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", stop_after=3))
    kept = (run / "checkpoints" / "step_000003.train.safetensors").read_bytes()
    train(tiny(tmp_path, "run"), resume=True)
    # As an older i2i could leave it: checkpoint 6 written, its state not, state 3 kept.
    (run / "checkpoints" / "step_000006.train.safetensors").unlink()
    (run / "checkpoints" / "step_000003.train.safetensors").write_bytes(kept)
    with pytest.warns(UserWarning, match=r"removing .*step_000006\.safetensors: it is newer"):
        train(tiny(tmp_path, "run", stop_after=4), resume=True)
    assert not (run / "checkpoints" / "step_000006.safetensors").exists()
    train(tiny(tmp_path, "run"), resume=True)
    assert_same_run(straight, run)


def test_an_unreadable_checkpoint_at_the_resumed_step_is_rewritten(tmp_path, straight):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", stop_after=3))
    checkpoint = run / "checkpoints" / "step_000003.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"rewriting .*step_000003\.safetensors"):
        train(tiny(tmp_path, "run"), resume=True)
    read_checkpoint(checkpoint)
    assert_same_run(straight, run)


def test_temporary_files_of_a_killed_run_do_not_block_a_new_start(tmp_path, straight):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    leftover = run / "checkpoints" / ".step_000003.train.safetensors.k2j4.tmp"
    leftover.write_bytes(b"half a state")
    with pytest.warns(UserWarning, match="partial write"):
        train(tiny(tmp_path, "run"))
    assert not leftover.exists()
    assert_same_run(straight, run)


def test_checkpoints_without_any_state_say_how_to_start_anew(tmp_path):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", steps=3))
    (run / "checkpoints" / "step_000003.train.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no training state .* delete .*checkpoints"):
        train(tiny(tmp_path, "run"), resume=True)
    with pytest.raises(FileExistsError, match=r"no training state .* delete .*checkpoints"):
        train(tiny(tmp_path, "run"))
    shutil.rmtree(run / "checkpoints")          # as the message says
    train(tiny(tmp_path, "run", steps=3))


def _truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _missing_tensors(path: Path) -> None:
    save_tensors(path, {"rng/torch": torch.get_rng_state()}, read_document(path))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "a checkpoint",
                                    "missing tensors"])
def test_an_unreadable_state_is_a_cli_error_naming_it(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert main(CLI + ["--out", str(out), "--steps", "3"]) == 0
    state = out / "checkpoints" / "step_000003.train.safetensors"
    if damage == "truncated":
        state.write_bytes(_truncated(state.read_bytes()))
    elif damage == "garbage":
        state.write_bytes(bytes(range(256)) * 64)
    elif damage == "empty":
        state.write_bytes(b"")
    elif damage == "a checkpoint":
        shutil.copy(out / "checkpoints" / "step_000003.safetensors", state)
    else:
        _missing_tensors(state)
    capsys.readouterr()
    assert main(CLI + ["--out", str(out), "--steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-train: error:"), err
    assert str(state) in err and "cannot be read" in err
    assert "no earlier state is left: start the run anew" in err


def test_an_unreadable_newest_state_points_to_the_earlier_one(tmp_path, capsys, straight):
    out = tmp_path / "run"
    assert main(CLI + ["--out", str(out), "--steps", "6", "--stop-after", "3"]) == 0
    kept = (out / "checkpoints" / "step_000003.train.safetensors").read_bytes()
    assert main(CLI + ["--out", str(out), "--steps", "6", "--resume"]) == 0
    (out / "checkpoints" / "step_000003.train.safetensors").write_bytes(kept)
    newest = out / "checkpoints" / "step_000006.train.safetensors"
    newest.write_bytes(_truncated(newest.read_bytes()))
    capsys.readouterr()
    assert main(CLI + ["--out", str(out), "--steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(newest) in err and "delete it to resume from the earlier state " \
        "step_000003.train.safetensors" in err
    newest.unlink()                              # as the message says
    with pytest.warns(UserWarning, match="newer than the newest training state"):
        assert main(CLI + ["--out", str(out), "--steps", "6", "--resume"]) == 0
    assert_same_run(straight, out)


TORN = '{"step": 4, "time": 0.25, "lr": 0.0002, "losses": {"G": 0.7'


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path, straight):
    run = tmp_path / "run"
    train(tiny(tmp_path, "run", stop_after=3))
    with open(run / "log.jsonl", "a") as f:
        f.write(TORN)                             # a crash in the middle of writing step 4
    with pytest.warns(UserWarning, match=r"log\.jsonl: dropping its last line \(4\)"):
        train(tiny(tmp_path, "run"), resume=True)
    assert_same_run(straight, run)


def test_a_damaged_log_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(CLI + ["--out", str(out), "--steps", "6", "--stop-after", "3"]) == 0
    lines = (out / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (out / "log.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(CLI + ["--out", str(out), "--steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-train: error:")
    assert re.search(re.escape(str(out / "log.jsonl")) + r", line 2: not a log record", err)


def test_read_log_drops_a_torn_last_line_and_refuses_damage_in_the_middle(tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    records = [{"step": s, "time": 0.5 * s, "lr": 1e-3, "losses": {"G": 1.0}} for s in (1, 2)]
    whole = "".join(json.dumps(r) + "\n" for r in records)
    log.write_text(whole + TORN)
    with pytest.warns(UserWarning, match=re.escape(str(log))):
        assert read_log(log) == records
    log.write_text(whole + "\n\n")                  # blank lines are no damage
    assert read_log(log) == records
    log.write_text(json.dumps(records[0]) + "\n" + TORN + "\n" + json.dumps(records[1]) + "\n")
    with pytest.raises(LogError, match=re.escape(str(log)) + ", line 2"):
        read_log(log)
    log.write_text(whole + "[1, 2]\n")
    with pytest.raises(LogError, match="line 3: .*integer 'step'"):
        read_log(log)


def test_logged_seconds_reads_past_a_torn_last_line(tmp_path):
    final = train(tiny(tmp_path, "run", steps=3))
    log = final.parent.parent / "log.jsonl"
    expected = read_log(log)[-1]["time"]
    with open(log, "a") as f:
        f.write(TORN)
    with pytest.warns(UserWarning, match="dropping its last line"):
        assert logged_seconds(final) == expected


class Recording:
    def __init__(self, short: int | None = None):
        self.writes, self.flushed, self.short = [], 0, short

    def write(self, data) -> int:
        data = bytes(data)
        taken = data[:self.short] if self.short and not self.writes else data
        self.writes.append(taken)
        return len(taken)

    def flush(self) -> None:
        self.flushed += 1


def test_a_log_record_is_one_write_of_one_whole_line():
    record = {"step": 7, "time": 1.5, "lr": 2e-4, "losses": {"G": 0.5, "note": "x" * 20000}}
    log = Recording()
    append_record(log, record)
    assert len(log.writes) == 1 and log.writes[0].endswith(b"\n")
    assert log.writes[0].count(b"\n") == 1 and json.loads(log.writes[0]) == record
    assert log.flushed == 1
    short = Recording(short=10)                       # a short write is finished, not lost
    append_record(short, record)
    assert b"".join(short.writes) == log.writes[0]


def test_the_loop_writes_its_log_unbuffered_through_append_record(tmp_path, monkeypatch):
    seen = []

    def spy(log, record):
        seen.append((type(log).__name__, record["step"]))
        append_record(log, record)
    monkeypatch.setattr(loop, "append_record", spy)
    train(tiny(tmp_path, "run", steps=2))
    assert seen == [("FileIO", 1), ("FileIO", 2)]
