"""`make demo`'s code path on a few steps: it trains, translates and writes its report."""

from __future__ import annotations

import json

from PIL import Image

from i2i.demo import run_demo


def test_demo_writes_translations_curve_and_report(tmp_path):
    summary = run_demo(tmp_path / "runs", tmp_path / "out", steps=3)
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "IoU, output shape vs bounding square" in report and "translations.png" in report
    grid = Image.open(out / "translations.png")
    assert grid.width > grid.height            # 10 columns, 3 rows
    assert Image.open(out / "loss_curve.png").size[0] > 100
    recorded = json.loads((out / "metrics.json").read_text())
    assert recorded["metrics"]["images"] == 64
    assert summary["checkpoint"].endswith("step_000003.safetensors")
    # Running it again finds the finished run and does not train again.
    again = run_demo(tmp_path / "runs", tmp_path / "out", steps=3)
    assert again["checkpoint"] == summary["checkpoint"]
