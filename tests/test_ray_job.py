"""i2i-translate --ray against a local Ray instance of 2 CPUs: the local command's outputs, bit
for bit, from an actor pool of 2 engines; a re-run translates only what is not done."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from i2i.runtime.translate_cli import main

from .server_utils import tiny_checkpoint
from .test_folder import files, pictures

ray = pytest.importorskip("ray")

NAMES = [f"img{i}.png" for i in range(5)] + ["photo.jpg", "sub/deep.png"]


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for the module: starting one takes seconds."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, list[str]]:
    """(a folder to write into, the command's arguments without the input and output): a tiny
    additive checkpoint, masks written, sub-folders mirrored."""
    root = tmp_path_factory.mktemp("ray")
    checkpoint = tiny_checkpoint(root / "ckpt")
    inputs = pictures(root / "in", NAMES)
    (inputs / "broken.png").write_bytes(b"not a picture")
    return root, [str(inputs), "--model", str(checkpoint), "--masks", "--recursive",
                  "--no-progress"]


def _pngs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files(folder)
            if name.endswith(".png")}


def test_the_ray_job_writes_the_local_commands_bytes_and_resumes(local_ray, job, capsys):
    root, args = job
    local, remote = root / "local", root / "remote"
    assert main([args[0], str(local), *args[1:]]) == 1                 # broken.png fails
    said = capsys.readouterr().out
    assert "translated 7, already done 0, failed 1" in said
    assert main([args[0], str(remote), *args[1:], "--ray", "--workers", "2"]) == 1
    report = lambda out: out[out.index("translated "):]     # the local one notes as it goes
    assert report(capsys.readouterr().out) == report(said)
    want = _pngs(local)
    assert len(want) == 14                            # a translation and a mask per picture
    assert _pngs(remote) == want
    assert (remote / "index.html").is_file()

    # Two outputs gone, one cut short: the re-run translates those three pictures only.
    (remote / "img0.png").unlink()
    (remote / "sub" / "deep.mask.png").unlink()
    (remote / "photo.png").write_bytes(want["photo.png"][:100])
    assert main([args[0], str(remote), *args[1:], "--ray"]) == 1
    assert "translated 3, already done 4, failed 1" in capsys.readouterr().out
    assert _pngs(remote) == want


@pytest.mark.parametrize("extra,message", [
    (["--workers", "2"], "--workers sizes the Ray job's actor pool; add --ray"),
    (["--ray", "--workers", "0"], "--workers must be at least 1, got 0"),
])
def test_ray_option_errors_are_clear_and_exit_2(job, tmp_path, capsys, extra, message):
    root, args = job
    assert main([args[0], str(tmp_path / "out"), *args[1:], *extra]) == 2
    assert message in capsys.readouterr().err


def test_without_ray_installed_the_error_says_what_to_install(job, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    root, args = job
    assert main([args[0], str(tmp_path / "out"), *args[1:], "--ray"]) == 2
    assert "pip install 'i2i[ray]'" in capsys.readouterr().err
