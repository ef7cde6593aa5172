"""The parity gate: one artifact, opened by the engine class that serves it, run against eager
fp32 on its signature's parity batches, judged by its precision's threshold
(i2i.export.parity.thresholds), then timed.

The timing (the fastest of at least MIN_RUNS runs of the first parity batch at the export size,
and of as many more as fit in TIMING_BUDGET_S, up to MAX_RUNS, after the parity run warmed the
engine; torch's thread count) is what engine "auto" ranks artifacts by
(i2i.engines.choice). It is a short measurement on the export machine, recorded in the
manifest beside the parity figures, not a benchmark: benchmarks/ holds those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..engines import ENGINES, EngineSpec
from ..manifest import sha256, stem
from ..models.spec import ModelSpec
from . import parity

MIN_RUNS, MAX_RUNS = 3, 100
# Small graphs run in a millisecond or two, where three runs rank artifacts by the machine's
# noise (two int8 graphs 2% apart at export, 35% apart in serving): they get more runs.
TIMING_BUDGET_S = 0.25


@dataclass
class Graph:
    """One signature being exported."""

    label: str                          # the signature: "default", "masked", ...
    module: nn.Module                   # the fp32 module; the signature names its method
    spec: ModelSpec
    parity_batches: list[dict[str, torch.Tensor]]
    artifacts: dict                     # where its manifest entries go
    # The batches of real images among parity_batches (or held out of calibration where the
    # checkpoint records no data): what domain-only thresholds (int8) are judged on.
    domain_batches: list[dict[str, torch.Tensor]] = field(default_factory=list)
    random_batches: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return stem(self.label)


class Gate:
    """Runs one artifact through its serving engine against eager and records the verdict."""

    def __init__(self, model: str, size: tuple[int, int], batch: tuple[int, int, int],
                 size_multiple: int, log: object = print):
        self.model, self.size, self.batch, self.log = model, size, batch, log
        self.size_multiple = size_multiple
        self.failures: list[str] = []

    def __call__(self, graph: Graph, key: str, facts: dict, engine: str, path: Path,
                 precision: str, device: str = "cpu", fixed: bool = True) -> None:
        spec = EngineSpec(self.model, {graph.label: graph.spec}, self.batch[2],
                          self.size if fixed else None, self.size_multiple, self.size,
                          precision, device)
        served = ENGINES[engine]({graph.label: path}, spec)
        reference = parity.eager_runner(graph.module, graph.spec)
        threshold = parity.thresholds()[precision]
        batches = graph.domain_batches if threshold.domain_only else graph.parity_batches
        if not batches:
            raise ValueError(f"{key}: its threshold ({threshold.describe()}) needs the "
                             "domain's images, and none were found; pass --calibration")
        figures = parity.compare(reference, served.run, batches)
        passed, worst = parity.verdict(figures, precision)
        facts.update({"precision": precision, "sha256": sha256(path), "parity": figures,
                      "threshold": threshold.describe(), "passed": passed})
        if threshold.domain_only and graph.random_batches:   # recorded, not judged
            facts["parity_random"] = parity.compare(reference, served.run, graph.random_batches)
        if passed:
            facts["timing"] = timing(served.run, batches[0])
        graph.artifacts[key] = facts
        label = key if graph.label == "default" else f"{graph.label} {key}"
        speed = f", {facts['timing']['ms_per_image']:.1f} ms/image" if passed else ""
        self.log(f"  {label:18s} {'ok  ' if passed else 'MISS'} {worst} ({engine}{speed})")
        if not passed:
            self.failures.append(f"{label} {worst}")

    def skip(self, graph: Graph, key: str, reason: str) -> None:
        graph.artifacts[key] = {"skipped": reason}
        label = key if graph.label == "default" else f"{graph.label} {key}"
        self.log(f"  {label:18s} skipped: {reason}")


def timing(run, batch: dict[str, torch.Tensor]) -> dict:
    """Milliseconds per image of the fastest run of `batch` (the engine already warm): the
    least disturbed by the rest of the machine, which only ever adds time."""
    rows = int(next(iter(batch.values())).shape[0])
    seconds = []
    deadline = time.perf_counter() + TIMING_BUDGET_S
    while len(seconds) < MIN_RUNS or (len(seconds) < MAX_RUNS and time.perf_counter() < deadline):
        started = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - started)
    return {"ms_per_image": min(seconds) * 1e3 / rows, "batch": rows, "runs": len(seconds),
            "threads": torch.get_num_threads()}
