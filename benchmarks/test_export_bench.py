"""Latency of the additive generator on the CPU: eager torch vs onnxruntime vs AOTInductor.

    .venv/bin/python -m pytest benchmarks/test_export_bench.py --benchmark-json out/export.json
    .venv/bin/python benchmarks/export_report.py out/export.json    # -> benchmarks/results/

Two configurations (`small`: ngf 16, 3 blocks, 64x64; `full`: ngf 64, 9 blocks, 256x256), batch
1 and 8. Weights are random but seeded: latency does not depend on their values. Each artifact is
built once per configuration (ONNX with a dynamic batch, an AOTInductor package for batch 1-8),
and checked against eager before it is timed. Every engine runs with torch's intra-op thread
count (AOTInductor bakes it into the package at compile time).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

import i2i.models
from i2i.engines.aoti import load_aoti
from i2i.export.aoti import export_aoti
from i2i.models.spec import ModelSpec
from i2i.sysinfo import machine

CONFIGS = {"small": {"ngf": 16, "n_blocks": 3, "size": 64},
           "full": {"ngf": 64, "n_blocks": 9, "size": 256}}
BATCHES = [1, 8]
ENGINES = ["eager", "onnxruntime", "aoti"]
ROUNDS = {"small": 20, "full": 3}        # the full model takes ~0.6-1.3 s per image on 2 vCPU
PARITY = 1e-4                           # max abs error vs eager before an engine is timed


@dataclass
class Artifacts:
    """One configuration's module, spec and lazily built engines (built once, on first use)."""

    name: str
    module: torch.nn.Module
    spec: ModelSpec
    size: tuple[int, int]
    folder: Path
    engines: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = \
        field(default_factory=dict)
    expected: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)   # by batch

    def engine(self, name: str) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if name not in self.engines:
            build = {"eager": self._eager, "onnxruntime": self._onnxruntime, "aoti": self._aoti}
            self.engines[name] = build[name]()
        return self.engines[name]

    def _eager(self):
        def run(inputs):
            with torch.no_grad():
                return self.module(**inputs)
        return run

    def _onnxruntime(self):
        path = self.folder / f"{self.name}.onnx"
        names_in = [t.name for t in self.spec.inputs]
        names_out = [t.name for t in self.spec.outputs]
        batch = torch.export.Dim("batch", min=1, max=max(BATCHES))
        torch.onnx.export(self.module, (), str(path), kwargs=_images(self.spec, 2, self.size),
                          dynamo=True, opset_version=18, input_names=names_in,
                          output_names=names_out,
                          dynamic_shapes={name: {0: batch} for name in names_in})
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph_in = [i.name for i in session.get_inputs()]
        graph_out = [o.name for o in session.get_outputs()]
        if sorted(graph_in) != sorted(names_in) or graph_out != names_out:
            raise RuntimeError(f"ONNX graph names {graph_in} -> {graph_out} differ from the "
                               f"spec's {names_in} -> {names_out}")

        def run(inputs):
            feeds = {name: inputs[name].numpy() for name in graph_in}
            out = session.run(graph_out, feeds)
            return {name: torch.from_numpy(a) for name, a in zip(graph_out, out, strict=True)}
        return run

    def _aoti(self):
        path = self.folder / f"{self.name}.pt2"
        export_aoti(self.module, self.spec, path, batch=(1, 2, max(BATCHES)), size=self.size)
        return load_aoti(path, self.spec)


def _images(spec: ModelSpec, batch: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {t.name: torch.rand((batch, t.shape[1], *size), generator=g) * 2 - 1   # [-1, 1]
            for t in spec.inputs}


@pytest.fixture(scope="module", params=list(CONFIGS))
def artifacts(request, tmp_path_factory) -> Artifacts:
    name = request.param
    values = CONFIGS[name]
    torch.manual_seed(0)
    config = i2i.models.make_config("additive", {"ngf": values["ngf"],
                                                 "n_blocks": values["n_blocks"]})
    module = i2i.models.build("additive", config).eval()
    spec = i2i.models.get_entry("additive").spec(config)
    return Artifacts(name, module, spec, (values["size"],) * 2,
                     tmp_path_factory.mktemp(f"export-{name}"))


def _device() -> str:
    info = machine()
    return f"{info['cpu']} ({info['cpu_count']} cores)"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", BATCHES)
def test_latency(benchmark, artifacts, batch, engine):
    run = artifacts.engine(engine)
    inputs = _images(artifacts.spec, batch, artifacts.size)
    if batch not in artifacts.expected:
        artifacts.expected[batch] = artifacts.engine("eager")(inputs)
    out = run(inputs)                                      # warm up, and check before timing
    for name, ref in artifacts.expected[batch].items():
        err = (out[name] - ref).abs().max().item()
        assert err <= PARITY, f"{engine} {name}: max abs error {err:.2e} vs eager"

    benchmark.extra_info.update({
        "engine": engine, "config": artifacts.name, "batch": batch,
        "size": list(artifacts.size), "ngf": artifacts.module.config.ngf,
        "n_blocks": artifacts.module.config.n_blocks, "device": _device(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "onnxruntime": ort.__version__, "load": _load()})
    benchmark.pedantic(run, args=(inputs,), rounds=ROUNDS[artifacts.name], iterations=1,
                       warmup_rounds=1)
    if benchmark.stats is not None:                        # None under --benchmark-disable
        benchmark.extra_info["ms_per_image"] = benchmark.stats.stats.median * 1e3 / batch


def _load() -> float:
    """The 1-minute load average when the case starts: other jobs make figures unusable."""
    return os.getloadavg()[0]
