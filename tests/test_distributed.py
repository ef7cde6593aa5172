"""Data-parallel training on 2 gloo ranks (CPU processes) against one process at the doubled
batch: the same losses and weights, and an exact resume.

Tolerance: the ranks sum a loss's rows, gradients and batch-norm statistics in another order
than one process does, so float32 rounding differs (losses agree to ~1e-7 relative). Three
Adam steps of lr 2e-4 move a weight by at most 6e-4, and a rounding-level gradient difference
moves Adam's step by a rounding-level fraction of that: weights must agree to 1e-5, ten times
below a single Adam step. A recipe that averaged no gradients, synced no batch norm or kept one
pool per rank misses this by the size of a step (see test_the_tolerance_tells_one_batch_from_
the_other).

Left out: parameters that change no output (a convolution's bias before an instance norm, which
subtracts it again). Their true gradient is zero, the computed one is rounding noise, and Adam
divides it by its own size: each run takes full lr-sized steps of its own noise's sign. They are
found by adding 1 to each parameter of freshly built networks and seeing no output move.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from i2i.train import cli, distributed
from i2i.train.loop import TrainOptions, train

TINY = dict(size=32, ngf=8, n_blocks=1, ndf=8, disc_layers=2, steps=3, progress=False,
            sample_every=100, checkpoint_every=100, log_every=1)
# cyclegan: gradients over two generators and two discriminators, replay pools of 3 (full after
# the first step, so later queries swap); pix2pix: batch norms in the U-Net and the PatchGAN.
# At size 32 the U-Net has 5 levels and no dropout, so every random number is shared.
RUNS = {"cyclegan": dict(model="cyclegan", pool_size=3, batch_size=2),
        "pix2pix": dict(model="pix2pix", batch_size=1)}
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def _options(root: Path, name: str, **values) -> TrainOptions:
    return TrainOptions(out=str(root / name), **{**TINY, **values})


def _rank(rank: int, ports: tuple[int, int], root: Path) -> None:
    """One of the two ranks: each run of RUNS straight, and cyclegan stopped after step 2 and
    resumed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    first, *others = RUNS.items()
    # As under torchrun: train() makes the process group from the environment and ends it.
    train(_options(root, f"two-{first[0]}", device="cpu", **first[1]))
    assert not dist.is_initialized()
    # A group the caller made is used and left open, so the other runs share one.
    os.environ["MASTER_PORT"] = str(ports[1])
    dist.init_process_group("gloo")
    try:
        for name, values in others:
            train(_options(root, f"two-{name}", device="cpu", **values))
        split = _options(root, "two-split", device="cpu", **RUNS["cyclegan"])
        train(replace(split, stop_after=2))
        train(split, resume=True)
    finally:
        dist.destroy_process_group()


def _free_ports() -> tuple[int, int]:
    """Two distinct free ports (both held while asked for)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Run folders: two-* by 2 gloo ranks at batch B, one-* by this process at 2 x B."""
    root = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank, args=(_free_ports(), root), nprocs=2, start_method="spawn")
    for name, values in RUNS.items():
        train(_options(root, f"one-{name}", **{**values, "batch_size": 2 * values["batch_size"]}))
    return root


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _state(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "step_000003.train.safetensors")


@torch.no_grad()
def _dead(name: str) -> set[str]:
    """Training-state keys of the parameters (and their Adam moments) of run `name` that change
    no output of their network."""
    options = _options(Path("unused"), name, **RUNS[name]).resolved()
    recipe, _ = options.recipe().make(options.recipe_options())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dead = set()
    for net_name, net in recipe.nets.items():
        net.train()         # as they train: batch statistics, not per-sample ones
        run = (lambda n=net: n.generator(x)) if hasattr(net, "generator") else (
            lambda n=net: n(torch.cat([x, x], 1) if name == "pix2pix" else x))
        before = run()
        for key, p in net.named_parameters():
            p += 1
            if (run() - before).abs().max() < 1e-4:
                dead.add(p)
                dead.add(f"net/{net_name}/{key}")
            p -= 1
    for opt_name, opt in recipe.optimizers.items():
        params = [p for group in opt.param_groups for p in group["params"]]
        dead |= {f"optim/{opt_name}/{i}/{moment}" for i, p in enumerate(params) if p in dead
                 for moment in ("exp_avg", "exp_avg_sq")}
    return {k for k in dead if isinstance(k, str)}


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_train_as_one_process_at_the_doubled_batch(runs, name):
    two, one = _log(runs / f"two-{name}"), _log(runs / f"one-{name}")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3]
    for a, b in zip(two, one, strict=True):
        assert a["losses"].keys() == b["losses"].keys()
        for k in a["losses"]:
            assert a["losses"][k] == pytest.approx(b["losses"][k], rel=LOSS_RTOL), (a["step"], k)
    # Every network, Adam moment and replay pool of the training state.
    a, b = _state(runs / f"two-{name}"), _state(runs / f"one-{name}")
    assert a.keys() == b.keys()
    dead = _dead(name)
    assert all(k in a for k in dead)
    for key in a.keys() - dead:
        if key.startswith(("net/", "optim/", "pool/")) and a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=WEIGHT_ATOL, msg=key)
    assert json.loads((runs / f"two-{name}" / "options.json").read_text())["nproc"] == 2


def test_the_tolerance_tells_one_batch_from_the_other(runs, tmp_path):
    """One process at the ranks' own batch (what a rank without its partner computes) is far
    outside the tolerance: the comparison above can fail."""
    alone = train(_options(tmp_path, "alone", **RUNS["pix2pix"])).parent.parent
    a, b = _state(runs / "two-pix2pix"), _state(alone)
    worst = max((a[k] - b[k]).abs().max().item() for k in a if k.startswith("net/G_AB/")
                and a[k].is_floating_point())
    assert worst > 100 * WEIGHT_ATOL


def test_a_resumed_two_rank_run_equals_the_straight_one_exactly(runs):
    a, b = _state(runs / "two-split"), _state(runs / "two-cyclegan")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    untimed = lambda run: [{k: v for k, v in r.items() if k != "time"} for r in _log(run)]
    assert untimed(runs / "two-split") == untimed(runs / "two-cyclegan")


def test_only_rank_0_writes_the_run(runs):
    run = runs / "two-cyclegan"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000003.BtoA.safetensors", "step_000003.safetensors",
        "step_000003.train.safetensors"]
    assert len(_log(run)) == 3                          # one line a step, not one per rank


def test_resuming_with_another_number_of_ranks_says_how_many(runs, tmp_path):
    with pytest.raises(ValueError, match=r"trained by 2 rank\(s\).*i2i-train --nproc 2"):
        train(_options(runs, "two-cyclegan", steps=4), resume=True)


def test_nproc_launches_torchrun_without_itself(monkeypatch):
    called = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command: called.append(command) or 0)
    assert cli.main(["--nproc", "2", "--model", "cyclegan", "--out", "runs/x"]) == 0
    command = called[0]
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone",
                            "--nproc-per-node=2", "-m"]
    assert command[6:] == ["i2i.train.cli", "--model", "cyclegan", "--out", "runs/x"]


@pytest.mark.parametrize("args,environ,message", [
    (["--nproc", "0"], {}, "--nproc must be at least 1, got 0"),
    (["--nproc", "2"], {"WORLD_SIZE": "2"}, "already is one of torchrun's ranks"),
])
def test_nproc_errors_are_clear_and_exit_2(monkeypatch, capsys, args, environ, message):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert cli.main([*args, "--out", "runs/x"]) == 2
    assert message in capsys.readouterr().err


def test_more_ranks_than_gpus_on_a_node_says_what_to_do(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="rank 1 needs GPU 1, but this node has 1; launch at "
                                         "most that many ranks per node"):
        distributed.join("auto")
    assert not dist.is_initialized()
