"""The Triton extensions that tools call, in Triton's own JSON shapes: model configuration,
statistics and the repository index. Both frontends answer from these dicts: HTTP sends them as
JSON, gRPC parses them into tritonclient's messages (google.protobuf.json_format), so the two
cannot drift apart.

    GET  /v2/models/{model}[/versions/1]/config     model_config(): a ModelConfig
    GET  /v2/models[/{model}[/versions/1]]/stats    Statistics.json(): {"model_stats": [...]}
    POST /v2/repository/index                       repository_index(): [{name, version, state}]

A model with several signatures lists the union of their inputs; an input that not every
signature takes is `optional`, and the config's `parameters` say which names make which
signature. Statistics follow Triton's definitions: counts per request (success, fail, queue,
compute) with summed nanoseconds, `inference_count` in rows (images), `execution_count` in
engine runs, and per batch size the runs and their compute time. i2i copies inputs and outputs
inside the engine call, so compute_input and compute_output are counted within compute_infer
and reported as zero.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ..engines import EngineSpec
from ..models.spec import TensorSpec
from .batcher import BatcherStats

DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}      # TensorSpec dtype -> Triton


@dataclass(frozen=True)
class Scheduling:
    """The batching settings a config reports (the server's, not the engine's)."""

    max_batch: int
    max_delay_ms: float
    max_queue: int
    timeout_ms: float


def model_config(spec: EngineSpec, engine: str, scheduling: Scheduling) -> dict:
    """Triton's ModelConfig of the served model, as JSON (dims without the batch dimension)."""
    every = list(spec.signatures.values())
    inputs = _union([t for s in every for t in s.inputs])
    outputs = _union([t for s in every for t in s.outputs])

    def tensor(t: TensorSpec, optional: bool | None = None) -> dict:
        entry = {"name": t.name, "data_type": DATA_TYPES[t.dtype], "dims": list(t.shape[1:])}
        if optional is not None:
            entry["optional"] = optional
        return entry

    signatures = {label: sorted(s.names) for label, s in spec.signatures.items()}
    kind = "KIND_GPU" if spec.device.startswith("cuda") else "KIND_CPU"
    return {
        "name": spec.model, "platform": f"i2i_{engine}", "backend": "i2i",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": scheduling.max_batch,
        "input": [tensor(t, not all(t in s.inputs for s in every)) for t in inputs],
        "output": [tensor(t) for t in outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(scheduling.max_delay_ms * 1000),
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(scheduling.timeout_ms * 1000),
                "allow_timeout_override": True, "max_queue_size": scheduling.max_queue}},
        "instance_group": [{"name": f"{spec.model}_0", "kind": kind, "count": 1}],
        # which input names pick which signature (i2i.models.spec), for a client to read
        "parameters": {"signatures": {"string_value": json.dumps(signatures)}},
    }


def _union(tensors: list[TensorSpec]) -> list[TensorSpec]:
    """The tensors in first-seen order, one per name."""
    seen: dict[str, TensorSpec] = {}
    for t in tensors:
        seen.setdefault(t.name, t)
    return list(seen.values())


def repository_index(model: str, ready: bool, ready_only: bool = False) -> list[dict]:
    """The repository index: the one served model, READY once warmed up."""
    state = "READY" if ready else "UNAVAILABLE"
    entry = {"name": model, "version": "1", "state": state}
    if not ready:
        entry["reason"] = "warming up"
    return [] if ready_only and not ready else [entry]


class Statistics:
    """Per-request outcomes of one model (the batcher counts the batches): what Triton's
    statistics extension reports."""

    def __init__(self) -> None:
        self.success = [0, 0]           # [requests, nanoseconds from arrival to answer]
        self.fail = [0, 0]
        self.last_inference_ms = 0      # wall clock of the last answer, ms since the epoch

    def record(self, started_ns: int, ok: bool) -> None:
        """One KServe request that arrived at time.perf_counter_ns() == started_ns."""
        totals = self.success if ok else self.fail
        totals[0] += 1
        totals[1] += time.perf_counter_ns() - started_ns
        self.last_inference_ms = time.time_ns() // 1_000_000

    def json(self, model: str, batches: BatcherStats) -> dict:
        """{"model_stats": [...]} for `model`, its batches counted by `batches`."""
        def duration(count: int, seconds: float) -> dict:
            return {"count": count, "ns": round(seconds * 1e9)}

        zero = duration(0, 0.0)
        by_size = [{"batch_size": size, "compute_input": zero,
                    "compute_infer": duration(int(runs), seconds), "compute_output": zero}
                   for size, (runs, seconds) in sorted(batches.by_size.items())]
        inference = {
            "success": {"count": self.success[0], "ns": self.success[1]},
            "fail": {"count": self.fail[0], "ns": self.fail[1]},
            "queue": duration(batches.executed, batches.waited_seconds),
            "compute_input": zero,
            "compute_infer": duration(batches.executed, batches.computed_seconds),
            "compute_output": zero, "cache_hit": zero, "cache_miss": zero}
        return {"model_stats": [{
            "name": model, "version": "1", "last_inference": self.last_inference_ms,
            "inference_count": batches.rows, "execution_count": batches.batches,
            "inference_stats": inference, "response_stats": {}, "batch_stats": by_size,
            "memory_usage": []}]}
