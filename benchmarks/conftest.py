"""Options of the benchmarks under pytest (benchmarks/test_*_bench.py)."""

from __future__ import annotations

from pathlib import Path


def pytest_addoption(parser) -> None:
    parser.addoption("--quick", action="store_true",
                     help="test_precision_bench.py: the tiniest setting (ngf 8, 1 block, 32x32, "
                          "a 10-step trained checkpoint, one round, no AOTInductor): a smoke "
                          "check of the benchmark's code, whose figures mean nothing")
    parser.addoption("--demo-run", type=Path, default=Path("runs/demo-additive"),
                     help="test_precision_bench.py: the demo's run folder, whose newest "
                          "checkpoint is the trained configuration (trained there with the "
                          "demo's options when it holds none)")
