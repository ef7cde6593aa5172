"""benchmarks/gpu_check.sh: its dry run lists every step within the 8-minute budget, and its
errors say what to do. (The steps themselves need a CUDA GPU.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_dry_run_lists_every_step_within_eight_minutes(tmp_path):
    done = run("--dry-run", "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [re.match(r"  (\S+) \(limit (\d+) s\): (.+)", line) for line in lines[1:]]
    assert all(steps) and [s[1] for s in steps] == ["gpu-tests", "kernel-bandwidth",
                                                    "engine-throughput"]
    assert sum(int(s[2]) for s in steps) <= 8 * 60
    assert f"limits add up to {sum(int(s[2]) for s in steps)} s" in lines[0]
    commands = {s[1]: s[3] for s in steps}
    assert "-m gpu tests" in commands["gpu-tests"]
    assert "benchmarks/test_kernels_bench.py" in commands["kernel-bandwidth"]
    assert f"{tmp_path / 'work'}/kernels.json" in commands["kernel-bandwidth"]
    assert "benchmarks/gpu_engines.py" in commands["engine-throughput"]
    assert not (tmp_path / "work").exists()                 # a dry run writes nothing


def test_dry_run_names_the_python_it_would_use(tmp_path):
    done = run("--dry-run", env={**os.environ, "PYTHON": "/opt/gpu/bin/python"})
    assert done.returncode == 0
    assert done.stdout.count("/opt/gpu/bin/python -m pytest") == 2


def test_unknown_option_no_torch_and_no_gpu_are_refused_with_what_to_do(tmp_path):
    done = run("--fast")
    assert done.returncode == 2
    assert "unknown option '--fast'; use --dry-run, --work DIR or --help" in done.stderr
    done = run(env={**os.environ, "PYTHON": "/bin/false"})
    assert done.returncode == 2
    assert "/bin/false cannot import torch; set PYTHON=/path/to/python" in done.stderr
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real run is the check itself")
    done = run("--work", str(tmp_path / "work"), env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2
    assert "torch sees no CUDA GPU" in done.stderr and "--dry-run lists the steps" in done.stderr
    assert not (tmp_path / "work").exists()


def test_engine_throughput_step_refuses_a_machine_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: gpu_check.sh runs this step for real")
    script = SCRIPT.parent / "gpu_engines.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "e.json")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SCRIPT.parent.parent)})
    assert done.returncode == 2
    assert "torch sees no CUDA GPU; nothing to measure" in done.stderr
    assert not (tmp_path / "e.json").exists()
