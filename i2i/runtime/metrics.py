"""Prometheus metrics of one server: requests (HTTP and gRPC) by endpoint and status, queue and
compute time, batch sizes, queue depth, inference (images) and execution (batches) counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TIME_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("i2i_requests", "HTTP requests and gRPC rpcs by endpoint and "
                                "status", ["endpoint", "status"], registry=r)
        self.queue_seconds = Histogram("i2i_queue_seconds", "time a batch's oldest request "
                                       "waited before compute", buckets=TIME_BUCKETS, registry=r)
        self.compute_seconds = Histogram("i2i_compute_seconds", "engine time per batch",
                                         buckets=TIME_BUCKETS, registry=r)
        self.batch_size = Histogram("i2i_batch_size", "rows per executed batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("i2i_queue_depth", "requests waiting", registry=r)
        self.inferences = Counter("i2i_inference_count", "images translated", registry=r)
        self.executions = Counter("i2i_execution_count", "engine runs (batches)", registry=r)

    def on_batch(self, rows: int, queue_seconds: float, compute_seconds: float) -> None:
        self.batch_size.observe(rows)
        self.queue_seconds.observe(queue_seconds)
        self.compute_seconds.observe(compute_seconds)
        self.inferences.inc(rows)
        self.executions.inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
