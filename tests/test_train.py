"""The training core end to end on tiny configurations: every recipe, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from i2i.data.shapes import SyntheticShapes
from i2i.models import get_entry, load, read_document
from i2i.train.cli import main
from i2i.train.loop import TrainOptions, learning_rate, train
from i2i.train.losses import ImagePool
from i2i.train.registry import RECIPES

TINY = dict(size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2, progress=False,
            sample_every=3, checkpoint_every=3, log_every=1)

# The recipes these tests train: every one on plain unlabelled pictures whose model translates
# an image alone. Labelled recipes (lomit) and models with more inputs (maskcyclegan's mask)
# have test files of their own.
PLAIN = [entry for entry in RECIPES.values() if not entry.labels and [
    s.name for s in get_entry(entry.model).spec(get_entry(entry.model).config()).inputs] == [
    "image"]]
# Flags a recipe needs beyond the tiny ones here: pix2pix a U-Net shallow enough for 16 pixels.
EXTRA = {"pix2pix": ["--depth", "3"]}


def _folder_runs() -> list[tuple[str, list[str], dict[str, int]]]:
    """(model, flags, folder layout) per plain recipe, and once more with each of its
    switches on: the CycleGAN layout, or root/train with A|B pairs for paired recipes."""
    runs = []
    for entry in PLAIN:
        flags = ["--supervised"] * entry.supervised + EXTRA.get(entry.model, [])
        layout = {"train": 3} if entry.pairs else {"trainA": 3, "trainB": 4}
        runs.append((entry.model, flags, layout))
        runs += [(entry.model, [*flags, f"--{name}"], layout) for name in entry.switches]
    return runs


def tiny(tmp_path: Path, name: str = "run", **overrides) -> TrainOptions:
    values = {**TINY, "steps": 4, **overrides}
    return TrainOptions(out=str(tmp_path / name), **values)


@pytest.mark.parametrize("model,supervised", [(e.model, e.supervised) for e in PLAIN])
def test_each_recipe_trains_and_writes_a_loadable_run(tmp_path, model, supervised):
    final = train(tiny(tmp_path, model=model, supervised=supervised))
    run = final.parent.parent
    assert final.name == "step_000004.safetensors"
    assert (run / "checkpoints" / "step_000003.safetensors").exists()   # every 3 steps
    assert (run / "checkpoints" / "step_000004.train.safetensors").exists()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(v)) for r in log for v in r["losses"].values())
    assert Image.open(run / "loss_curve.png").size[0] > 100
    grid = Image.open(run / "samples" / "step_000004.png")
    rows = 3 if model == "additive" else 2
    rows += 1 if (supervised or model == "pix2pix") else 0          # paired: target row
    tile = 16 * (128 // 16) + 2 * (128 // 16)                      # scaled tile plus gap
    assert round(grid.height / tile) == rows
    module, spec = load(final)
    out = module(torch.zeros(1, 3, 16, 16))
    assert set(out) == {s.name for s in spec.outputs}
    assert not module.training


def test_resume_gives_the_same_weights_as_training_straight(tmp_path):
    straight = train(tiny(tmp_path, "straight", steps=6, decay_start=0.3))
    train(tiny(tmp_path, "split", steps=6, decay_start=0.3, stop_after=3))
    resumed = train(tiny(tmp_path, "split", steps=6, decay_start=0.3), resume=True)
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The whole training state (discriminators, Adam moments, replay pools) matches too.
    sa = load_file(straight.with_name("step_000006.train.safetensors"))
    sb = load_file(resumed.with_name("step_000006.train.safetensors"))
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # And the log reads as one run.
    steps = [json.loads(x)["step"] for x in (resumed.parent.parent / "log.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_architecture(tmp_path):
    train(tiny(tmp_path, steps=3))
    with pytest.raises(ValueError, match=r"differ from it: \['ngf'\]"):
        train(tiny(tmp_path, steps=6, ngf=8), resume=True)


def test_resume_without_state_and_rerun_without_resume_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no training state"):
        train(tiny(tmp_path), resume=True)
    train(tiny(tmp_path, steps=3))
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(tiny(tmp_path, steps=3))


def test_corrupt_training_state_is_a_clear_error(tmp_path):
    train(tiny(tmp_path, steps=3))
    state = tmp_path / "run" / "checkpoints" / "step_000003.train.safetensors"
    state.write_bytes(state.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        train(tiny(tmp_path, steps=6), resume=True)


def test_learning_rate_is_constant_then_decays_to_zero():
    o = TrainOptions(out="", steps=100, lr=1e-3, decay_start=0.5)
    assert learning_rate(o, 0) == learning_rate(o, 49) == 1e-3
    assert learning_rate(o, 75) == pytest.approx(0.5e-3)
    assert learning_rate(o, 100) == 0.0


def test_image_pool_fills_then_swaps_with_probability_half():
    pool = ImagePool(size=4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)            # filling: returned unchanged
    later = torch.full((200, 1, 1, 1), 100.0)
    out = pool.query(later).flatten()
    from_pool = (out < 100).sum().item()
    assert 0 < from_pool <= 4 + 200                          # some came from the pool
    swapped = (out != 100).float().mean().item()
    assert 0.0 < swapped < 0.1      # at most the 4 stored originals can ever come back out
    restored = ImagePool(size=4, seed=99)
    restored.load(pool.state(), torch.device("cpu"))
    probe = torch.full((20, 1, 1, 1), 7.0)
    assert torch.equal(restored.query(probe.clone()), pool.query(probe.clone()))


def test_larger_lambda_r_gives_a_smaller_mask(tmp_path):
    """The seed's headline claim, in direction only, on a tiny configuration."""
    means = {}
    for lam in (0.01, 100.0):
        # A larger learning rate than training uses, so that 40 steps move the mask.
        final = train(tiny(tmp_path, f"lam{lam}", steps=40, lambda_r=lam, lr=2e-3,
                           decay_start=1.0, checkpoint_every=40, sample_every=40))
        module, _ = load(final)
        x = torch.stack([SyntheticShapes(size=16, split="test").sample("A", i)[0]
                         for i in range(8)])
        with torch.no_grad():
            means[lam] = module(x)["mask"].abs().mean().item()
    assert means[100.0] < 0.5 * means[0.01]


def _folder(root: Path, names: dict[str, int], size=(20, 24)) -> None:
    g = torch.Generator().manual_seed(0)
    for folder, count in names.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / folder / f"{i}.png")


def test_the_plain_recipes_are_at_least_those_tested_before():
    assert {(e.model, e.supervised) for e in PLAIN} >= {
        ("additive", False), ("additive", True), ("cyclegan", False), ("cut", False),
        ("pix2pix", False)}
    assert ("cut", ["--fastcut"], {"trainA": 3, "trainB": 4}) in _folder_runs()


@pytest.mark.parametrize("model,extra,layout", _folder_runs())
def test_cli_trains_on_folders_in_the_reference_layouts(tmp_path, capsys, model, extra, layout):
    _folder(tmp_path / "data", layout, size=(40, 20) if "train" in layout else (20, 24))
    code = main(["--model", model, *extra, "--data", str(tmp_path / "data"), "--size", "16",
                 "--steps", "2", "--batch-size", "2", "--ngf", "4", "--n-blocks", "1",
                 "--ndf", "4", "--disc-layers", "2", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "checkpoint:" in capsys.readouterr().out
    module, spec = load(tmp_path / "run" / "checkpoints" / "step_000002.safetensors")
    assert [s.name for s in spec.inputs] == ["image"]
    document = read_document(tmp_path / "run" / "checkpoints" / "step_000002.safetensors")
    expected_kind = "aligned" if "train" in layout else "unaligned"
    assert document["meta"]["data"]["kind"] == expected_kind
    assert document["model"] == model


@pytest.mark.parametrize("args,message", [
    (["--model", "adittive"], "unknown model 'adittive' .*did you mean 'additive'"),
    (["--data", "/nonexistent/data"], "data root /nonexistent/data does not exist"),
    (["--data", "synthetic:triangles"], "unknown synthetic data"),
    (["--model", "cyclegan", "--supervised"], "--supervised applies to the additive model"),
    (["--size", "30"], "--size 30 must be a multiple of 4"),
    (["--disc", "dcgan", "--size", "32"], "dcgan needs --size 64"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys, args, message):
    base = ["--out", str(tmp_path / "run"), "--steps", "1", "--size", "16", "--ngf", "4",
            "--n-blocks", "1", "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-train: error:")
    import re
    assert re.search(message, err), err


def test_cli_rejects_an_empty_cyclegan_folder_before_training(tmp_path, capsys):
    _folder(tmp_path / "data", {"trainA": 2})
    (tmp_path / "data" / "trainB").mkdir()
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    assert "trainB" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_logged_seconds_reads_the_checkpoint_step_from_the_log(tmp_path):
    from i2i.train.loop import logged_seconds
    final = train(tiny(tmp_path, steps=3))
    log = [json.loads(x) for x in (final.parent.parent / "log.jsonl").read_text().splitlines()]
    assert logged_seconds(final) == log[-1]["time"] and log[-1]["step"] == 3
    (final.parent.parent / "log.jsonl").unlink()
    assert logged_seconds(final) is None
