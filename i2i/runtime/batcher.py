"""Dynamic batcher: many concurrent requests -> few engine calls, independent of HTTP and engine.

    batcher = Batcher(engine.run, max_batch_size=8, max_delay_ms=5)
    await batcher.start()
    out = await batcher.submit({"image": x})    # x: (n, 3, H, W) -> out["translation"]: (n, ...)
    await batcher.stop(drain=True)

One worker task takes the oldest queued request, then waits until `max_delay_ms` after *that
request's arrival* for more requests of the same input signature (names, shapes beyond dim 0,
dtypes, devices), and runs at once when the batch is full. Requests of other signatures keep
their place in line, so batches leave in the order of their oldest request. The engine runs on
one dedicated thread, one batch at a time: engines are not assumed thread-safe, and some (CUDA
graphs) want to stay on one thread. Errors carry the HTTP status the server answers with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Runner = Callable[[dict[str, Tensor]], dict[str, Tensor]]  # blocking; dim 0 = batch in and out
Key = tuple[tuple[str, tuple[int, ...], torch.dtype, torch.device], ...]  # one entry per input
Piece = tuple[int, int, int]  # rows [start, end) of request number i in the batch: (i, start, end)
HISTORY = 10_000  # samples kept in each BatcherStats list


class BatcherError(Exception):
    """Base of the batcher's errors; `status` is the HTTP status the server answers with."""

    status: int = 500


class QueueFull(BatcherError):
    status = 503


class DeadlineExceeded(BatcherError):
    status = 504


class BatcherClosed(BatcherError):
    status = 503


class EngineFailed(BatcherError):
    status = 500


@dataclass
class BatcherStats:
    """Counters for /metrics. Lists keep the last HISTORY samples: batch_sizes and
    compute_seconds one per executed batch, queue_seconds one per executed request."""

    requests: int = 0  # accepted into the queue
    batches: int = 0  # batches formed (an OOM split still counts as one)
    rejected_full: int = 0
    expired: int = 0
    cancelled: int = 0
    failed: int = 0  # requests answered with EngineFailed
    oom_splits: int = 0
    queue_depth: int = 0  # requests waiting now (not counting the running batch)
    # Running totals since start (Triton's statistics extension): requests computed, rows,
    # their summed waits and their batches' compute (each request charged its batch's), and
    # per batch size [batches, seconds of compute].
    executed: int = 0
    rows: int = 0
    waited_seconds: float = 0.0
    computed_seconds: float = 0.0
    by_size: dict[int, list[float]] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    queue_seconds: list[float] = field(default_factory=list)
    compute_seconds: list[float] = field(default_factory=list)


@dataclass(eq=False)  # identity equality: list.remove must not compare tensors
class _Request:
    inputs: dict[str, Tensor]  # each (rows, ...)
    rows: int
    key: Key
    future: asyncio.Future[dict[str, Tensor]]
    arrival: float  # loop.time() at submit; the batch window is timed from the oldest arrival
    deadline: float | None  # loop.time() after which it must not be computed
    report: Callable[[int, int, float, float], None] | None = None  # see submit


class Batcher:
    def __init__(self, run: Runner, max_batch_size: int, max_delay_ms: float = 5.0,
                 max_queue: int = 256, default_timeout_ms: float | None = 30_000.0,
                 on_batch: Callable[[int, float, float], None] | None = None):
        """on_batch(rows, queue_seconds_of_oldest, compute_seconds) runs after each batch."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if default_timeout_ms is not None and default_timeout_ms <= 0:
            raise ValueError(f"default_timeout_ms must be > 0 or None, got {default_timeout_ms}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000  # seconds, like loop.time()
        self.max_queue = max_queue
        self.default_timeout_ms = default_timeout_ms
        self._on_batch = on_batch
        self.stats = BatcherStats()
        self._queue: list[_Request] = []  # oldest first; at most max_queue long
        self._wakeup: asyncio.Event | None = None  # set on every queue change
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the worker task on the running loop (once)."""
        if self._worker is not None or self._closing:
            raise RuntimeError("Batcher.start() may be called once, before stop()")
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="i2i-engine")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="i2i-batcher")

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; with drain, finish every queued and running request first,
        else fail the queued ones with BatcherClosed (a running batch always finishes)."""
        self._closing = True
        if not drain:
            for req in self._queue:
                if not req.future.done():
                    req.future.set_exception(BatcherClosed(
                        "the batcher stopped before this request ran; retry later"))
            self._queue.clear()
            self.stats.queue_depth = 0
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await asyncio.shield(self._worker)  # a cancelled stop() must not kill the drain
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # idle: the worker awaited its last batch

    async def submit(self, inputs: dict[str, Tensor], timeout_ms: float | None = None,
                     report: Callable[[int, int, float, float], None] | None = None
                     ) -> dict[str, Tensor]:
        """One request of n rows (inputs (n, ...)) -> its n rows of every output, after report(
        batch number, batch rows, queue s, compute s). Raises ValueError/TypeError/BatcherError."""
        if self._closing:
            raise BatcherClosed("the batcher is stopping and accepts no new requests")
        if self._worker is None or self._worker.done():
            raise BatcherClosed("the batcher is not running; call `await batcher.start()` first")
        rows, key = _describe(inputs, self.max_batch_size)
        timeout_ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        if timeout_ms is not None and timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {timeout_ms}")
        if len(self._queue) >= self.max_queue:
            self.stats.rejected_full += 1
            raise QueueFull(f"queue full ({len(self._queue)} waiting); retry later")
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = None if timeout_ms is None else now + timeout_ms / 1000
        req = _Request(dict(inputs), rows, key, loop.create_future(), now, deadline, report)
        self._queue.append(req)
        self.stats.requests += 1
        self._changed()
        try:
            if timeout_ms is None:
                return await req.future
            # The timer runs here, on the caller's side, so it fires on time even while the
            # engine is busy with another batch; wait_for cancels the future on timeout.
            return await asyncio.wait_for(req.future, timeout_ms / 1000)
        except asyncio.TimeoutError:
            self.stats.expired += 1
            raise DeadlineExceeded(f"no result within the deadline of {timeout_ms:g} ms; the "
                                   "server is busy or the timeout is too short") from None
        except DeadlineExceeded:  # the worker found it expired while forming a batch
            self.stats.expired += 1
            raise
        except asyncio.CancelledError:  # the caller went away: never compute it
            self.stats.cancelled += 1
            raise
        finally:
            if req in self._queue:
                self._queue.remove(req)
                self._changed()

    # -- worker ----------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.stats.queue_depth = len(self._queue)
        assert self._wakeup is not None
        self._wakeup.set()

    async def _work(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._execute(batch)
            except Exception as exc:  # a bug here must not strand every later request
                log.exception("batcher: executing a batch failed")
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(EngineFailed(f"internal batcher error: {exc!r}"))

    async def _next_batch(self) -> list[_Request] | None:
        """Wait for the next batch and take it off the queue; None once stopped and empty."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._drop_expired(now)
            if not self._queue:
                if self._closing:
                    return None
                await self._wait(None)
                continue
            batch, full = self._gather()
            window_end = self._queue[0].arrival + self.max_delay
            # While stopping nothing new arrives, so waiting out the window gains nothing.
            if full or self._closing or now >= window_end:
                for req in batch:
                    self._queue.remove(req)
                self.stats.queue_depth = len(self._queue)
                return batch
            await self._wait(window_end - now)

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until the queue changes or `timeout` seconds pass."""
        assert self._wakeup is not None
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _drop_expired(self, now: float) -> None:
        for req in [r for r in self._queue if r.deadline is not None and now >= r.deadline]:
            self._queue.remove(req)
            if not req.future.done():
                req.future.set_exception(DeadlineExceeded(
                    f"deadline passed after {(now - req.arrival) * 1000:.0f} ms in the queue; "
                    "the server is busy or the timeout is too short"))
        self.stats.queue_depth = len(self._queue)

    def _gather(self) -> tuple[list[_Request], bool]:
        """The oldest request and the compatible ones after it, in order, up to max rows."""
        head = self._queue[0]
        batch: list[_Request] = []
        rows = 0
        for req in self._queue:
            if req.key != head.key:
                continue  # another signature: keeps its place for a later batch
            if rows + req.rows > self.max_batch_size:
                return batch, True  # the next in line does not fit: as full as FIFO allows
            batch.append(req)
            rows += req.rows
        return batch, rows == self.max_batch_size

    async def _execute(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        waited = [loop.time() - req.arrival for req in batch]
        started = time.perf_counter()
        outcomes, splits = await loop.run_in_executor(self._executor, self._compute, batch)
        compute = time.perf_counter() - started
        rows = sum(req.rows for req in batch)
        stats = self.stats
        stats.batches += 1
        stats.oom_splits += splits
        _record(stats.batch_sizes, [rows])
        _record(stats.queue_seconds, waited)
        _record(stats.compute_seconds, [compute])
        stats.executed, stats.rows = stats.executed + len(batch), stats.rows + rows
        stats.waited_seconds += sum(waited)
        stats.computed_seconds += compute * len(batch)
        totals = stats.by_size.setdefault(rows, [0, 0.0])
        totals[0], totals[1] = totals[0] + 1, totals[1] + compute
        for req, outcome, wait in zip(batch, outcomes, waited, strict=True):
            if req.future.done():
                continue  # timed out or cancelled while computing: nobody is waiting
            if isinstance(outcome, BaseException):
                stats.failed += 1
                req.future.set_exception(outcome)
                continue
            if req.report is not None:
                req.report(stats.batches, rows, wait, compute)
            req.future.set_result(outcome)
        if self._on_batch is not None:
            try:
                self._on_batch(rows, max(waited), compute)
            except Exception:
                log.exception("batcher: on_batch callback failed")

    # -- engine thread -----------------------------------------------------------------------------

    def _compute(self, batch: list[_Request]) -> tuple[list[dict[str, Tensor] | EngineFailed], int]:
        """Run the batch (splitting on OOM); per request its outputs or EngineFailed, and the
        number of splits. Runs on the engine thread."""
        done: dict[Piece, dict[str, Tensor] | str] = {}  # piece -> outputs or error message
        splits = self._run_pieces(batch, [(i, 0, req.rows) for i, req in enumerate(batch)], done)
        outcomes: list[dict[str, Tensor] | EngineFailed] = []
        for i in range(len(batch)):
            parts = [done[p] for p in sorted(p for p in done if p[0] == i)]  # by start row
            errors = [part for part in parts if isinstance(part, str)]
            if errors:
                outcomes.append(EngineFailed(errors[0]))  # one exception object per caller
            elif len(parts) == 1:
                outcomes.append(parts[0])
            else:  # a request split by rows: glue its pieces back together
                outcomes.append({name: torch.cat([part[name] for part in parts])
                                 for name in parts[0]})
        return outcomes, splits

    def _run_pieces(self, batch: list[_Request], pieces: list[Piece],
                    done: dict[Piece, dict[str, Tensor] | str]) -> int:
        """Run `pieces` as one engine call, halving on out-of-memory; returns the splits."""
        rows = sum(end - start for _, start, end in pieces)
        try:
            outputs = self._run_once(batch, pieces, rows)
        except Exception as exc:
            if _is_oom(exc) and rows > 1:
                left, right = _halve(pieces)  # retry each half; a lone row cannot shrink
                return (1 + self._run_pieces(batch, left, done)
                        + self._run_pieces(batch, right, done))
            log.warning("engine failed on a batch of %d rows", rows, exc_info=exc)
            message = f"engine failed on a batch of {rows} row(s): {type(exc).__name__}: {exc}"
            done.update((piece, message) for piece in pieces)
            return 0
        done.update(zip(pieces, outputs, strict=True))
        return 0

    def _run_once(self, batch: list[_Request], pieces: list[Piece], rows: int
                  ) -> list[dict[str, Tensor]]:
        names = batch[pieces[0][0]].inputs  # same names in every piece: same key
        inputs = {name: _cat([batch[i].inputs[name][start:end] for i, start, end in pieces])
                  for name in names}  # each (rows, ...)
        outputs = self._run(inputs)
        if not isinstance(outputs, dict):
            raise TypeError(f"engine returned {type(outputs).__name__}, expected a dict of "
                            "name -> tensor")
        for name, out in outputs.items():
            if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != rows:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"engine output {name!r} is {got}; expected {rows} rows in dim 0")
        sizes = [end - start for _, start, end in pieces]
        split = {name: out.split(sizes) for name, out in outputs.items()}  # views, no copies
        return [{name: parts[k] for name, parts in split.items()} for k in range(len(pieces))]


def _describe(inputs: dict[str, Tensor], max_rows: int) -> tuple[int, Key]:
    """Check a request's inputs; return its row count n and its batching key."""
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError("inputs must be a non-empty dict of name -> tensor (n, ...)")
    for name, t in inputs.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"input {name!r} is a {type(t).__name__}, expected a torch.Tensor")
        if t.dim() == 0:
            raise ValueError(f"input {name!r} is a scalar; every input needs dim 0 = batch")
    counts = {name: t.shape[0] for name, t in inputs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"inputs disagree on the batch size (dim 0): {counts}")
    rows = next(iter(counts.values()))
    if rows < 1:
        raise ValueError("empty request: inputs have 0 rows")
    if rows > max_rows:
        raise ValueError(f"request has {rows} rows but max_batch_size is {max_rows}; "
                         f"send it as requests of at most {max_rows} rows")
    key = tuple(sorted((name, tuple(t.shape[1:]), t.dtype, t.device)
                       for name, t in inputs.items()))
    return rows, key


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


def _halve(pieces: list[Piece]) -> tuple[list[Piece], list[Piece]]:
    """Two halves of about equal rows, cutting between requests; one request by rows."""
    if len(pieces) == 1:
        i, start, end = pieces[0]
        mid = (start + end) // 2
        return [(i, start, mid)], [(i, mid, end)]
    rows = [end - start for _, start, end in pieces]
    before = list(accumulate(rows))[:-1]  # rows left of the cut after piece k (k = 0..n-2)
    cut = 1 + min(range(len(before)), key=lambda k: abs(2 * before[k] - sum(rows)))
    return pieces[:cut], pieces[cut:]


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # one piece: no copy


def _record(history: list, values: list) -> None:
    history.extend(values)
    del history[: max(0, len(history) - HISTORY)]
