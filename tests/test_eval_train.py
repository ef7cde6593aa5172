"""i2i-train --eval-every: held-out FID/KID/precision/recall records in log.jsonl, kept by a
resume, drawn in loss_curve.png, without changing what training draws; its refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from i2i.eval.features import TinyFeatures
from i2i.models import build, make_config
from i2i.train.cli import main
from i2i.train.evaluation import Evaluator
from i2i.train.figures import loss_curve
from i2i.train.loop import TrainOptions, logged_seconds, train
from i2i.train.runlog import read_log

TINY = dict(size=16, batch_size=2, ngf=4, n_blocks=1, ndf=4, disc_layers=2, progress=False,
            sample_every=4, checkpoint_every=2, log_every=1, steps=4)
EVAL = dict(eval_every=2, eval_features="tiny", eval_count=8)
METRICS = {"fid", "kid", "kid_std", "precision", "recall"}


def options(tmp_path: Path, name: str, **overrides) -> TrainOptions:
    return TrainOptions(out=str(tmp_path / name), **{**TINY, **overrides})


def test_metrics_are_logged_every_k_steps_and_drawn(tmp_path):
    final = train(options(tmp_path, "run", **EVAL))
    run = final.parent.parent
    log = read_log(run / "log.jsonl")
    metrics = [r for r in log if "metrics" in r]
    assert [r["step"] for r in metrics] == [2, 4]
    for r in metrics:
        assert set(r["metrics"]) == METRICS and r["features"] == "tiny"
        assert all(math.isfinite(v) for v in r["metrics"].values())
        assert 0 <= r["metrics"]["precision"] <= 1 and r["metrics"]["fid"] > 0
    assert [r["step"] for r in log if "losses" in r] == [1, 2, 3, 4]
    assert logged_seconds(final) == [r for r in log if "losses" in r][-1]["time"]
    # One panel per loss, then FID, KID, and precision with recall: 1.8 inches each at 110 dpi.
    losses = len(log[0]["losses"])
    assert Image.open(run / "loss_curve.png").height == round((losses + 3) * 1.8 * 110)


def test_evaluation_changes_nothing_training_draws_and_resume_keeps_its_records(tmp_path):
    plain = train(options(tmp_path, "plain"))
    straight = train(options(tmp_path, "straight", **EVAL))
    a, b = load_file(plain), load_file(straight)
    assert all(torch.equal(a[k], b[k]) for k in a)

    train(options(tmp_path, "split", stop_after=2, **EVAL))
    resumed = train(options(tmp_path, "split"), resume=True)      # the saved --eval-* kept
    got = read_log(resumed.parent.parent / "log.jsonl")
    want = read_log(straight.parent.parent / "log.jsonl")
    assert [r["metrics"] for r in got if "metrics" in r] == \
        [r["metrics"] for r in want if "metrics" in r]
    assert [r["step"] for r in got] == [r["step"] for r in want]


@pytest.mark.parametrize("model, config", [
    ("maskcyclegan", {"ngf": 4, "n_blocks": 1}),
    ("lomit", {"ngf": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "mask_layers": 2}),
])
def test_masks_and_exemplars_are_filled_for_models_that_take_them(model, config):
    torch.manual_seed(0)
    translator = build(model, make_config(model, config))
    source = torch.rand(5, 3, 16, 16) * 2 - 1
    target = torch.rand(4, 3, 16, 16) * 2 - 1
    evaluator = Evaluator(TinyFeatures(), source, target, 2, torch.device("cpu"))
    made = evaluator._translate(translator.eval(), batch=2)
    assert made.shape == (5, 3, 16, 16)
    assert set(evaluator.record(translator, 2)["metrics"]) == METRICS


def test_an_input_evaluation_cannot_fill_is_refused_naming_it(monkeypatch):
    import i2i.train.evaluation as evaluation
    from i2i.models.spec import ModelSpec, image_spec, knob_spec
    spec = ModelSpec((image_spec("image"), knob_spec("strength", 0.0, 1.0)),
                     (image_spec("translation"),), size_multiple=4)
    monkeypatch.setattr(evaluation, "signatures", lambda module: {"default": spec})
    with pytest.raises(ValueError, match="--eval-every cannot fill the knob input 'strength' of "
                                         "the model's default signature"):
        evaluation._default_call(torch.nn.Identity())


def test_a_log_without_metrics_draws_the_losses_only(tmp_path):
    log = [{"step": s, "time": s, "lr": 1.0, "losses": {"G": 1.0 / s, "D": 0.5}}
           for s in (1, 2)]
    path = loss_curve(log, tmp_path / "curve.png")
    assert Image.open(path).height == round(2 * 1.8 * 110)


@pytest.mark.parametrize("args, message", [
    (["--eval-every", "2"], "FID needs the Inception weights: --inception PATH, see README"),
    (["--eval-every", "2", "--eval-features", "tiny", "--inception", "w.pth"],
     "'tiny' takes none"),
    (["--eval-every", "-1"], "--eval-every must be at least 0 (0: no evaluation), got -1"),
    (["--eval-every", "2", "--eval-features", "tiny", "--eval-count", "3"],
     "--eval-count must be at least 4"),
    (["--eval-every", "2", "--inception", "nowhere.pth"], "Inception weights nowhere.pth not "
                                                           "found"),
])
def test_cli_refuses_evaluation_it_cannot_run(tmp_path, capsys, args, message):
    base = ["--out", str(tmp_path / "run"), "--steps", "1", "--size", "16", "--ngf", "4",
            "--n-blocks", "1", "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("i2i-train: error:") and message in err, err


def test_held_out_pictures_a_folder_lacks_are_named(tmp_path, capsys):
    data = tmp_path / "data"
    for domain in "AB":
        (data / f"train{domain}").mkdir(parents=True)
    for i in range(2):
        for domain in "AB":
            Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(data / f"train{domain}" /
                                                                f"{i}.png")
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--size", "16",
            "--ngf", "4", "--n-blocks", "1", "--no-progress", "--eval-every", "1",
            "--eval-features", "tiny", "--eval-count", "8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--eval-every needs at least 4 held-out pictures of domain A" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
