"""Every CPU engine x precision against onnxruntime fp32, each artifact's PSNR beside its speed.

    OMP_NUM_THREADS=2 .venv/bin/python -m pytest benchmarks/test_precision_bench.py \
        --benchmark-json out/precision.json    # about 25 minutes on 2 idle cores, plus the
                                                 # demo's training where runs/demo-additive has none
    .venv/bin/python benchmarks/precision_report.py out/precision.json   # -> benchmarks/results/
    ... --quick: the tiniest setting, a smoke check of this code (its figures mean nothing)

Three configurations of the additive generator:

    full     ngf 64, 9 blocks, 256x256, random seeded weights (about 99 GFLOP per image)
    demo     the demo's configuration (ngf 16, 3 blocks, 32x32), random seeded weights
    trained  the demo's trained checkpoint (--demo-run, default runs/demo-additive as `make demo`
             leaves it; trained there with the demo's options when missing): the PSNR that
             matters, since random weights say little about a real model's int8 error

Each is exported by i2i.export.build itself (formats onnx, openvino, aoti; precisions bf16 and
int8, int8 calibrated on the synthetic circles' test split), so every artifact went through the
gate users get; the gate's verdict and worst PSNR are recorded beside the speed. Each case also
measures its own PSNR against eager fp32 on the timed batch (images of the domain the gate and
the calibration never saw). Batches 1 and 8; every engine with torch's intra-op thread count.
precision_report.py gives ratios against onnxruntime fp32 of the same run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import i2i.models
from i2i.data import domain_samples
from i2i.engines import open_engine
from i2i.export import ExportOptions, build
from i2i.manifest import read_manifest
from i2i.sysinfo import machine

DATA = {"kind": "synthetic", "task": "circle2square", "seed": 0}
CONFIGS = {"full": {"ngf": 64, "n_blocks": 9, "size": 256},
           "demo": {"ngf": 16, "n_blocks": 3, "size": 32},
           "trained": None}                                 # the demo's checkpoint
QUICK = {"ngf": 8, "n_blocks": 1, "size": 32}
QUICK_STEPS = 10
BATCHES = [1, 8]
# (engine, precision): every CPU engine and the precisions it runs on a CPU (fp16 is a GPU
# precision; fused runs its torch reference on a CPU, which is eager).
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("openvino", "int8"), ("eager", "fp32"), ("eager", "bf16"),
         ("aoti", "fp32")]
ROUNDS = {"full": 9, "demo": 20, "trained": 20}
IMAGES = 24                     # domain images drawn; the timed batches are the last 8


@dataclass
class Export:
    """One configuration: its checkpoint, its export and the engines opened from it."""

    name: str
    checkpoint: Path
    folder: Path
    size: tuple[int, int]
    engines: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)           # batch -> eager fp32 outputs

    def engine(self, name: str, precision: str):
        if (name, precision) not in self.engines:
            self.engines[name, precision] = open_engine(
                name, export_dir=self.folder, checkpoint=self.checkpoint, device="cpu",
                precision=precision)
        return self.engines[name, precision]

    def gate(self, name: str, precision: str) -> dict:
        """The export gate's entries for this artifact, one per signature (`default`, and
        `strength` with its knob); {} for eager, which is no artifact."""
        if name == "eager":
            return {}
        key = type(self.engine(name, precision)).artifacts[precision][0]
        return {label: entry["artifacts"][key]
                for label, entry in read_manifest(self.folder)["signatures"].items()
                if key in entry["artifacts"]}


def _checkpoint(name: str, folder: Path, quick: bool, demo_run: Path) -> Path:
    if name == "trained":
        return _trained(demo_run if not quick else folder / "demo-additive", quick)
    values = QUICK if quick else CONFIGS[name]
    torch.manual_seed(0)
    config = i2i.models.make_config("additive", {"ngf": values["ngf"],
                                                 "n_blocks": values["n_blocks"]})
    module = i2i.models.build("additive", config)
    return i2i.models.save_checkpoint(folder / "step_000000.safetensors", "additive", config,
                                      module.state_dict(), step=0,
                                      meta={"training": {"size": values["size"]}, "data": DATA})


def _trained(run: Path, quick: bool) -> Path:
    """The newest checkpoint of the demo's run, trained with the demo's options if missing."""
    from i2i.demo import DEMO, DEMO_STEPS
    from i2i.train.loop import TrainOptions, newest_state, train

    found = sorted((run / "checkpoints").glob("step_*[0-9].safetensors"))
    if found and not quick:
        return found[-1]
    options = TrainOptions(out=str(run), steps=QUICK_STEPS if quick else DEMO_STEPS,
                           progress=False, **DEMO)
    return train(options, resume=newest_state(run) is not None)


@pytest.fixture(scope="module", params=list(CONFIGS))
def export(request, tmp_path_factory) -> Export:
    quick = request.config.getoption("--quick")
    folder = tmp_path_factory.mktemp(f"precision-{request.param}")
    ckpt = _checkpoint(request.param, folder, quick, request.config.getoption("--demo-run"))
    size = int(i2i.models.read_document(ckpt)["meta"]["training"]["size"])
    formats = ("onnx", "openvino") if quick else ("onnx", "openvino", "aoti")
    out = build(ckpt, ExportOptions(out=folder / "export", formats=formats,
                                    precisions=("bf16", "int8"), batch=(1, max(BATCHES),
                                                                        max(BATCHES)),
                                    size=(size, size), allow_parity_failure=True))
    return Export(request.param, ckpt, out, (size, size))


@pytest.mark.parametrize(("engine", "precision"), CASES)
@pytest.mark.parametrize("batch", BATCHES)
def test_precision_latency(benchmark, request, export, batch, engine, precision):
    quick = request.config.getoption("--quick")
    if quick and engine == "aoti":
        pytest.skip("--quick leaves out AOTInductor (its compile is most of the time)")
    images, _ = domain_samples(DATA, export.size, IMAGES, "A")
    inputs = {"image": images[-max(BATCHES):][:batch]}           # (batch, 3, H, W), unseen
    if batch not in export.reference:
        export.reference[batch] = export.engine("eager", "fp32").run(inputs)
    run = export.engine(engine, precision).run
    out = run(inputs)                                            # warm up, and measure
    gate = export.gate(engine, precision)
    benchmark.extra_info.update({
        "engine": engine, "precision": precision, "config": export.name, "batch": batch,
        "size": list(export.size), "psnr": _psnr(export.reference[batch], out),
        "gate_passed": all(g["passed"] for g in gate.values()) if gate else None,
        "gate_psnr": min((_gate_psnr(g) for g in gate.values()), default=None),
        "gate_psnr_by_signature": {label: _gate_psnr(g) for label, g in gate.items()},
        "gate_threshold": next((g["threshold"] for g in gate.values()), None),
        "device": _device(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "quick": quick,
        "versions": read_manifest(export.folder)["versions"],
        "calibration": read_manifest(export.folder).get("calibration"),
        "checkpoint": str(export.checkpoint), "load": os.getloadavg()[0]})
    rounds = 1 if quick else ROUNDS[export.name]
    benchmark.pedantic(run, args=(inputs,), rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:                        # None under --benchmark-disable
        benchmark.extra_info["ms_per_image"] = benchmark.stats.stats.median * 1e3 / batch


def _psnr(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> float:
    """The worst output's PSNR (dB, peak-to-peak 2) against eager fp32."""
    worst = math.inf
    for name, value in want.items():
        mse = (got[name].double() - value.double()).square().mean().item()
        worst = min(worst, math.inf if mse == 0 else 10 * math.log10(4.0 / mse))
    return worst


def _gate_psnr(entry: dict) -> float | None:
    figures = entry.get("parity") or {}
    return min((f["psnr"] for f in figures.values()), default=None)


def _device() -> str:
    info = machine()
    return f"{info['cpu']} ({info['cpu_count']} cores)"
