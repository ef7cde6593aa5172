"""What the HTTP and gRPC frontends share: the engine, its batcher, the limits, the metrics and
Triton-shaped statistics, and the one path by which a KServe batch reaches the engine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from starlette.requests import Request

from .. import __version__
from ..engines import check_batch
from . import images
from .batcher import Batcher
from .extensions import Scheduling, Statistics, model_config
from .kinds import mask_input, warm_batch
from .metrics import Metrics
from .protocol import NAMES, ProtocolError
from .resolution import NATIVE_BUDGET

log = logging.getLogger("i2i.serve")
Report = Callable[[int, int, float, float], None]   # (batch number, rows, queue s, compute s)


@dataclass
class ServerConfig:
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 256
    timeout_ms: float = 30_000.0
    api_key: str | None = None
    max_body_bytes: int = 64 << 20
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    max_run_pixels: int = NATIVE_BUDGET         # N x H x W one request may give the engine
    body_timeout_s: float = 60.0                # a body must arrive within this (408)
    max_inflight_bytes: int = 512 << 20         # request bodies held at once (503 beyond)
    cpu_workers: int = 2                        # threads that decode, resample and encode
    warmup: bool = True
    grpc_port: int | None = None                # the KServe v2 gRPC service, beside HTTP
    grpc_host: str = "127.0.0.1"


class Service:
    """The engine, its batcher, the metrics and statistics: what HTTP and gRPC share."""

    def __init__(self, engine, config: ServerConfig):
        self.engine, self.config = engine, config
        self.max_batch = min(config.max_batch, engine.spec.max_batch_size)
        # The engine's spec, with this server's batch limit: what every request is checked by.
        self.spec = dataclasses.replace(engine.spec, max_batch_size=self.max_batch)
        self.metrics = Metrics()
        self.statistics = Statistics()
        self.batcher = Batcher(engine.run, self.max_batch, config.max_delay_ms,
                               config.max_queue, config.timeout_ms,
                               on_batch=self.metrics.on_batch)
        self.ready = False
        self.inflight = 0                       # request body bytes held right now
        self.mask = mask_input(self.spec)       # filled by a mask file or ?mask=SCHEME
        # Decoding, resampling and encoding run here, never on the event loop.
        self.pool = ThreadPoolExecutor(config.cpu_workers, thread_name_prefix="i2i-cpu")
        # The most values one KServe request may carry: the run budget times the widest
        # signature's channels per pixel.
        per_pixel = max(sum(t.channels for t in s.inputs if t.spatial) or 1
                        for s in self.spec.signatures.values())
        self.max_elements = config.max_run_pixels * per_pixel

    @contextlib.asynccontextmanager
    async def body(self, request: Request):
        """The request's body: at most max_body_bytes (413), arriving within body_timeout_s
        (408), counted against the bytes all requests may hold at once (503) until the block
        ends."""
        limit, held = self.config.max_body_bytes, [0]
        declared = request.headers.get("content-length")

        async def read() -> bytes:
            chunks = []
            async for chunk in request.stream():
                held[0] += len(chunk)
                self.inflight += len(chunk)
                if held[0] > limit:
                    raise ProtocolError(f"request body is over the limit of {limit} bytes "
                                        "(raise it with --max-body-mb)", status=413)
                if self.inflight > self.config.max_inflight_bytes:
                    raise ProtocolError("the server holds as many request bodies as it may; "
                                        "retry shortly", status=503)
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _drain(request, limit)
                raise ProtocolError(f"request body of {declared} bytes is over the limit of "
                                    f"{limit} (raise it with --max-body-mb)", status=413)
            try:
                body = await asyncio.wait_for(read(), self.config.body_timeout_s)
            except asyncio.TimeoutError as err:
                raise ProtocolError(f"the request body did not arrive within "
                                    f"{self.config.body_timeout_s:g} s (--body-timeout-s)",
                                    status=408) from err
            yield body
        finally:
            self.inflight -= held[0]

    async def cpu(self, fn, *args):
        """fn(*args) on the CPU pool: the event loop keeps answering meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def start(self) -> None:
        await self.batcher.start()
        if self.config.warmup:
            await asyncio.to_thread(self.warm_up)
        self.ready = True

    def warm_up(self) -> None:
        """Run every batch size of the default signature once (CUDA graphs and lazy compilation
        happen here), and batch size 1 of every other signature."""
        size = self.spec.size or self.spec.default_size
        started = time.perf_counter()
        for n in range(1, self.max_batch + 1):
            self.engine.run(warm_batch(self.spec.default, n, size))
        for signature in self.spec.signatures.values():
            if signature is not self.spec.default:
                self.engine.run(warm_batch(signature, 1, size))
        log.info("warmed up batch sizes 1..%d in %.1f s", self.max_batch,
                 time.perf_counter() - started)

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop(drain=True)
        self.pool.shutdown(wait=False)

    def server_metadata(self) -> dict:
        return {"name": "i2i", "version": __version__,
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"]}

    def metadata_json(self) -> dict:
        """KServe v2 model metadata of the default signature, and every signature a request
        may pick by its input names (beyond KServe v2)."""
        def tensors(specs):
            return [{"name": t.name, "datatype": NAMES[t.dtype], "shape": list(t.shape)}
                    for t in specs]
        spec = self.spec
        return {"name": spec.model, "versions": ["1"], "platform": f"i2i_{self.engine.name}",
                # beyond KServe v2: what runs the model, and why it was chosen (engine auto)
                "engine": {"name": self.engine.name, "precision": spec.precision,
                           "device": spec.device, "choice": spec.choice},
                "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs),
                "signatures": {label: {"inputs": tensors(s.inputs),
                                       "outputs": tensors(s.outputs)}
                               for label, s in spec.signatures.items()}}

    def config_json(self) -> dict:
        """Triton's model configuration of what this server runs."""
        c = self.config
        return model_config(self.spec, self.engine.name, Scheduling(
            self.max_batch, c.max_delay_ms, c.max_queue, c.timeout_ms))

    def statistics_json(self) -> dict:
        return self.statistics.json(self.spec.model, self.batcher.stats)

    async def infer(self, inputs: dict[str, torch.Tensor], timeout_ms: float | None = None,
                    started_ns: int | None = None, report: Report | None = None
                    ) -> dict[str, torch.Tensor]:
        """inputs: one signature's, (N, ...) of one N (and one H and W): checked here, once,
        before the request is queued. Counted in the statistics from `started_ns`
        (time.perf_counter_ns() when the request arrived; default now). report: told the batch
        it ran in (Batcher.submit)."""
        started_ns = started_ns or time.perf_counter_ns()
        ok = False
        try:
            outputs = await self._infer(inputs, timeout_ms, report)
            ok = True
            return outputs
        finally:
            self.statistics.record(started_ns, ok)

    async def _infer(self, inputs: dict[str, torch.Tensor], timeout_ms: float | None,
                     report: Report | None = None) -> dict[str, torch.Tensor]:
        await self.cpu(check_batch, self.spec, inputs)
        first = next(t for t in inputs.values())
        pixels = first.shape[0] * (first.shape[2] * first.shape[3] if first.dim() == 4 else 1)
        if pixels > self.config.max_run_pixels:
            raise ProtocolError(f"the request gives the engine {pixels} pixels (N x H x W); "
                                f"this server runs at most {self.config.max_run_pixels} at once "
                                "(raise it with --max-run-pixels, or send /v1/translate, "
                                "which tiles large pictures)", status=413)
        self.metrics.queue_depth.set(self.batcher.stats.queue_depth + 1)
        try:
            return await self.batcher.submit(inputs, timeout_ms, report)
        except (ValueError, TypeError) as err:         # the batcher's own checks: the client's
            raise ProtocolError(str(err)) from err
        finally:
            self.metrics.queue_depth.set(self.batcher.stats.queue_depth)


async def _drain(request: Request, limit: int) -> None:
    """Read the rest of a refused body and drop it (up to a bound), so the client gets the
    answer instead of a connection reset while it is still sending."""
    dropped = 0
    async for chunk in request.stream():
        dropped += len(chunk)
        if dropped > 4 * limit:
            break

