"""i2i-eval end to end with the tiny feature net: a model's translations of a folder, two
folders of pictures, aligned A|B pictures; and every refusal, each with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import domain_samples
from i2i.eval.cli import main
from i2i.models import build, make_config, save_checkpoint
from i2i.pixels import to_image

from .server_utils import fixed_size_onnx_export


def folder(root: Path, names: list[str], size: tuple[int, int] = (16, 16), seed: int = 0,
           suffix: str = ".png") -> Path:
    """Random pictures of `size` (width, height), one per name."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"{name}{suffix}")
    return root


NAMES = [f"p{i}" for i in range(6)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = make_config("additive", {"ngf": 4, "n_blocks": 1})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_000001.safetensors",
                           "additive", config, build("additive", config).state_dict(), step=1,
                           meta={"training": {"size": 16}})


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args] + ["--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_model_s_translations_of_a_folder_against_targets(checkpoint, tmp_path, capsys):
    source = folder(tmp_path / "testA", NAMES, seed=1)
    target = folder(tmp_path / "testB", NAMES, seed=2, suffix=".jpg")       # paired by name
    report = tmp_path / "report.json"
    code, out, _ = run([source, target, "--model", checkpoint, "--features", "tiny",
                        "--json", report], capsys)
    assert code == 0
    assert "NOT comparable with published FID" in out
    for label in ("FID", "KID", "precision (k=3)", "recall (k=3)", "pixel accuracy", "PSNR",
                  "SSIM"):
        assert f"  {label} " in out
    written = json.loads(report.read_text())
    assert written["pictures"] == {"generated": 6, "target": 6, "paired": 6}
    assert written["features"]["network"] == "tiny" and not written["features"]["comparable"]
    assert written["fid"] > 0 and 0 <= written["precision"] <= 1 and 0 <= written["recall"] <= 1
    assert written["paired"]["tolerance"] == 16 and 0 <= written["paired"]["ssim"] <= 1
    assert written["inputs"]["model"] == str(checkpoint)
    assert written["inputs"]["engine"] == "eager"


def test_a_dataset_root_stands_for_its_test_a_and_test_b(checkpoint, tmp_path, capsys):
    folder(tmp_path / "data" / "testA", NAMES, seed=1)
    folder(tmp_path / "data" / "testB", NAMES[:5], seed=2)
    report = tmp_path / "root.json"
    code, _, _ = run([tmp_path / "data", "--model", checkpoint, "--features", "tiny",
                      "--json", report], capsys)
    assert code == 0
    written = json.loads(report.read_text())
    assert written["inputs"]["source"] == str(tmp_path / "data" / "testA")
    assert written["pictures"] == {"generated": 6, "target": 5, "paired": 5}


def test_a_folder_against_itself_scores_perfectly(tmp_path, capsys):
    pictures = folder(tmp_path / "same", NAMES, seed=3)
    report = tmp_path / "same.json"
    code, out, _ = run([pictures, pictures, "--features", "tiny", "--json", report], capsys)
    assert code == 0
    written = json.loads(report.read_text())
    assert written["fid"] == pytest.approx(0, abs=1e-6)
    assert written["precision"] == written["recall"] == 1.0
    assert written["paired"]["pixel_accuracy"] == 1.0 and written["paired"]["psnr"] == "inf"
    assert written["paired"]["ssim"] == pytest.approx(1.0)


def test_unpaired_folders_give_the_distribution_metrics_only(tmp_path, capsys):
    generated = folder(tmp_path / "made", NAMES, seed=4)
    target = folder(tmp_path / "wanted", [f"q{i}" for i in range(5)], (20, 24), seed=5)
    report = tmp_path / "r.json"
    code, out, _ = run([generated, target, "--features", "tiny", "--json", report], capsys)
    assert code == 0 and "no paired metrics" in out
    written = json.loads(report.read_text())
    assert written["paired"] is None and written["pictures"]["paired"] == 0
    assert written["pictures"]["target"] == 5
    # Numbered pictures of unpaired sets share names: --unpaired says they are not pairs.
    code, out, _ = run([generated, generated, "--features", "tiny", "--unpaired",
                        "--json", report], capsys)
    assert code == 0 and json.loads(report.read_text())["paired"] is None


def test_aligned_pictures_translate_each_a_half_against_its_b_half(checkpoint, tmp_path,
                                                                   capsys):
    pairs = folder(tmp_path / "test", NAMES, (32, 16), seed=6)
    report = tmp_path / "aligned.json"
    code, _, _ = run([pairs, "--aligned", "--model", checkpoint, "--features", "tiny",
                      "--json", report], capsys)
    assert code == 0
    written = json.loads(report.read_text())
    assert written["pictures"] == {"generated": 6, "target": 6, "paired": 6}
    assert written["inputs"]["source_half"] == "A" and written["inputs"]["target_half"] == "B"


def test_an_export_through_onnxruntime(checkpoint, tmp_path, capsys):
    export = fixed_size_onnx_export(checkpoint, tmp_path / "export", 16)
    source = folder(tmp_path / "a", NAMES, seed=7)
    target = folder(tmp_path / "b", NAMES, seed=8)
    report = tmp_path / "export.json"
    code, _, _ = run([source, target, "--model", export, "--features", "tiny", "--json", report],
                     capsys)
    assert code == 0
    written = json.loads(report.read_text())
    assert written["inputs"]["engine"] == "onnxruntime"
    # The same weights through the eager engine give the same pictures up to rounding.
    eager = tmp_path / "eager.json"
    assert run([source, target, "--model", checkpoint, "--features", "tiny", "--json", eager],
               capsys)[0] == 0
    assert json.loads(eager.read_text())["paired"]["psnr"] == pytest.approx(
        written["paired"]["psnr"], abs=0.05)


def test_synthetic_data_s_test_split_at_the_model_s_size(checkpoint, tmp_path, capsys):
    """synthetic:TASK measures the same pictures as a dataset root holding the data's held-out
    split, written here from i2i.data at the checkpoint's training size (16)."""
    root = tmp_path / "written"
    for domain in "AB":
        images, _ = domain_samples({"kind": "synthetic", "task": "circle2square"}, (16, 16), 8,
                                   domain)
        (root / f"test{domain}").mkdir(parents=True)
        for i, image in enumerate(images):
            to_image(image).save(root / f"test{domain}" / f"{domain}{i}.png")
    reports = {}
    for name, given in (("synthetic", "synthetic:circle2square"), ("folders", root)):
        reports[name] = tmp_path / f"{name}.json"
        code, _, _ = run([given, "--model", checkpoint, "--features", "tiny", "--count", 8,
                          "--json", reports[name]], capsys)
        assert code == 0
    synthetic, folders = (json.loads(reports[k].read_text()) for k in ("synthetic", "folders"))
    assert synthetic["pictures"] == {"generated": 8, "target": 8, "paired": 0}
    assert synthetic["inputs"]["source"] == "synthetic:circle2square test split"
    for metric in ("fid", "kid", "precision", "recall"):
        assert synthetic[metric] == pytest.approx(folders[metric], abs=1e-9)


def refusal(tmp_path: Path, checkpoint: Path, case: str) -> list:
    """The arguments of one refused command."""
    a = folder(tmp_path / "a", NAMES)
    b = folder(tmp_path / "b", NAMES, seed=1)
    tiny = ["--features", "tiny", "--json", tmp_path / "r.json"]
    if case == "inception":
        return [a, b, "--json", tmp_path / "r.json"]
    if case == "tiny+inception":
        return [a, b, "--features", "tiny", "--inception", tmp_path / "w.pth"]
    if case == "one folder":
        return [a, *tiny]
    if case == "aligned without model":
        return [a, "--aligned", *tiny]
    if case == "three folders":
        return [a, b, a, *tiny]
    if case == "missing":
        return [a, tmp_path / "nowhere", *tiny]
    if case == "a file":
        return [a, a / "p0.png", *tiny]
    if case == "empty":
        (tmp_path / "empty").mkdir()
        return [a, tmp_path / "empty", *tiny]
    if case == "shared name":
        folder(tmp_path / "b", ["p0"], suffix=".jpg")
        return [a, b, *tiny]
    if case == "too few":
        return [folder(tmp_path / "two", ["p0", "p1"]), b, *tiny]
    if case == "sizes":
        return [a, folder(tmp_path / "wide", NAMES, (20, 16)), *tiny]
    if case == "small":
        return [folder(tmp_path / "s1", NAMES, (8, 8)), folder(tmp_path / "s2", NAMES, (8, 8)),
                *tiny]
    if case == "odd width":
        return [folder(tmp_path / "odd", NAMES, (33, 16)), "--aligned", "--model", checkpoint,
                *tiny]
    if case == "tolerance":
        return [a, b, "--tolerance", "300", *tiny]
    if case == "k":
        return [a, b, "--k", "0", *tiny]
    if case == "kid subset":
        return [a, b, "--kid-subset-size", "1", *tiny]
    if case == "synthetic without model":
        return ["synthetic:circle2square", *tiny]
    if case == "count":
        return ["synthetic:circle2square", "--model", checkpoint, "--count", "0", *tiny]
    raise AssertionError(case)


@pytest.mark.parametrize("case, message", [
    ("inception", "FID needs the Inception weights: --inception PATH, see README"),
    ("tiny+inception", "'tiny' takes none: leave out --inception"),
    ("one folder", "one folder given; give two folders (GENERATED TARGET"),
    ("aligned without model", "--aligned takes one folder of A|B pictures and a --model"),
    ("three folders", "3 folders given; give two folders"),
    ("missing", "nowhere does not exist"),
    ("a file", "p0.png is not a folder"),
    ("empty", "no pictures in"),
    ("shared name", "p0.jpg and p0.png in"),
    ("too few", "precision and recall (k = 3): each set needs at least 4 pictures; the "
                "generated set has 2"),
    ("sizes", "the generated picture is 16x16 and its target 20x16"),
    ("small", "SSIM's 11x11 window needs pictures of at least 11x11 pixels"),
    ("odd width", "width 33 cannot be split into equal A|B halves"),
    ("tolerance", "--tolerance is in 8-bit levels, 0 to 255, got 300"),
    ("k", "--k must be at least 1, got 0"),
    ("kid subset", "--kid-subset-size must be at least 2, got 1"),
    ("synthetic without model", "synthetic:circle2square gives pictures of two domains: pass "
                                "the --model"),
    ("count", "--count must be at least 1, got 0"),
])
def test_refusals_say_what_to_do_and_exit_2(checkpoint, tmp_path, capsys, case, message):
    code, _, err = run(refusal(tmp_path, checkpoint, case), capsys)
    assert code == 2
    assert err.startswith("i2i-eval: error: ") and message in err
    assert not (tmp_path / "r.json").exists()


def test_a_report_that_cannot_be_written_exits_1(tmp_path, capsys):
    a = folder(tmp_path / "a", NAMES)
    blocked = tmp_path / "taken"
    blocked.mkdir()
    code, out, err = run([a, a, "--features", "tiny", "--json", blocked], capsys)
    assert code == 1 and "  FID " in out
    assert f"could not write {blocked}" in err and "choose another --json path" in err
