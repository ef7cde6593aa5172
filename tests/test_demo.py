"""`make demo`'s code path on a few steps: it trains, translates and writes its report."""

from __future__ import annotations

import json

from PIL import Image

from i2i.demo import run_demo


def test_demo_writes_translations_curve_and_report(tmp_path):
    summary = run_demo(tmp_path / "runs", tmp_path / "out", steps=3, exports=tmp_path / "exp")
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
    again = run_demo(tmp_path / "runs", tmp_path / "out", steps=3, exports=tmp_path / "exp")
    assert again["checkpoint"] == summary["checkpoint"]
    # The export step ran, passed its parity gate and its table is in the report.
    assert "| model.fp16.onnx | fp16 | translation |" in report
    artifacts = recorded["export"]["artifacts"]
    assert set(artifacts) == {"onnx", "onnx_fp16", "aoti", "triton"}
    assert all(facts["passed"] for key, facts in artifacts.items() if key != "triton")
    # The serving step answered every request like the engine does, in batches.
    serving = recorded["serving"]
    assert serving["requests"] == 64 and serving["max_abs_vs_engine"] < 1e-5
    assert serving["batches"] >= 1 and serving["mean_batch"] >= 1.0
    assert Image.open(out / "served.png").width > 0 and "## Serving" in report
    # One real-size picture through the native and mask policies, in the report.
    real = recorded["real_size"]
    assert real["size"] == [1200, 900] and "## A real-size picture" in report
    assert real["calm_max_change"] <= 1 and real["native_seconds"] > 0
    assert Image.open(out / "real-size.png").width > 1000
