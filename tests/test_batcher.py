"""The dynamic batcher against a fake engine that records every batch it gets. Timing checks use
lower bounds where they can (a window never closes early) and wide upper margins elsewhere, so a
busy machine makes the tests slower, not flaky."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from i2i.runtime import batcher as batcher_module
from i2i.runtime.batcher import Batcher, BatcherClosed, DeadlineExceeded, EngineFailed, QueueFull


class FakeEngine:
    """Returns {"y": 2 * first input}; records each call's inputs. Optionally blocks on `gate`
    (a threading.Event set by the test), sleeps, or raises from `fail(batch)`."""

    def __init__(self, gate: threading.Event | None = None, delay: float = 0.0, fail=None):
        self.gate, self.delay, self.fail = gate, delay, fail
        self.calls: list[dict[str, torch.Tensor]] = []  # every attempt, failed ones included
        self.threads: set[int] = set()
        self.started, self.lock = threading.Event(), threading.Lock()
        self.active = self.max_active = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.calls.append({name: t.clone() for name, t in batch.items()})
            self.threads.add(threading.get_ident())
            self.started.set()
            if self.gate is not None:
                assert self.gate.wait(5), "test forgot to open the gate"
            time.sleep(self.delay)
            if self.fail is not None:
                self.fail(batch)
            return {"y": next(iter(batch.values())) * 2}
        finally:
            with self.lock:
                self.active -= 1

    @property
    def sizes(self) -> list[int]:
        return [next(iter(call.values())).shape[0] for call in self.calls]

    def values(self) -> list[float]:
        """The first value of every row the engine saw, in order."""
        return [row.flatten()[0].item() for call in self.calls for row in call["x"]]


def x(value: float, n: int = 1, width: int = 2, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A request of n rows (n, width) whose rows are value, value + 1, ...: they identify it."""
    rows = torch.arange(n, dtype=dtype)[:, None] + value
    return {"x": rows.expand(n, width).contiguous()}


async def started(engine, **options) -> Batcher:
    b = Batcher(engine, **options)
    await b.start()
    return b


async def busy_batcher(**options) -> tuple[Batcher, FakeEngine, threading.Event, asyncio.Task]:
    """A batcher (max_batch_size=1) whose engine is stuck on x(0) until the test opens `gate`."""
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    b = await started(engine, max_batch_size=1, **options)
    busy = asyncio.create_task(b.submit(x(0), timeout_ms=10_000))
    await asyncio.to_thread(engine.started.wait, 5)
    return b, engine, gate, busy


async def wait_until(condition, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


def test_window_collects_requests_and_closes():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=8, max_delay_ms=50)
        t0 = time.monotonic()
        tasks = []
        for i in range(3):  # 1 ms apart: well inside the 50 ms window
            tasks.append(asyncio.create_task(b.submit(x(10 * i))))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        waited = time.monotonic() - t0
        await asyncio.sleep(0.1)
        late = await b.submit(x(99))  # after the window: a batch of its own
        await b.stop()
        assert engine.sizes == [3, 1]
        assert waited >= 0.045  # not full, so it waited out the window
        assert torch.equal(late["y"], x(99)["x"] * 2)
    asyncio.run(main())


def test_report_tells_each_request_its_batch_before_its_answer():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=8, max_delay_ms=50)
        seen: dict[str, list] = {"a": [], "b": [], "c": []}

        async def one(name: str, value: float, rows: int):
            out = await b.submit(x(value, rows), report=lambda *args: seen[name].append(args))
            assert len(seen[name]) == 1            # reported before the answer came back
            return out
        await asyncio.gather(one("a", 0, 2), one("b", 10, 3))
        await one("c", 20, 1)                      # after the window: a batch of its own
        await b.stop()
        (number_a, rows_a, queue_a, compute_a), = seen["a"]
        (number_b, rows_b, queue_b, compute_b), = seen["b"]
        (number_c, rows_c, _, _), = seen["c"]
        assert engine.sizes == [5, 1]
        assert (number_a, rows_a) == (number_b, rows_b) == (1, 5) and (number_c, rows_c) == (2, 1)
        assert compute_a == compute_b > 0 and queue_a >= queue_b >= 0
    asyncio.run(main())


def test_a_failed_request_is_not_reported():
    async def main():
        def fail(batch):
            raise RuntimeError("broken engine")
        b = await started(FakeEngine(fail=fail), max_batch_size=4, max_delay_ms=1)
        reports = []
        with pytest.raises(EngineFailed):
            await b.submit(x(0), report=lambda *args: reports.append(args))
        await b.stop()
        assert reports == []
    asyncio.run(main())


def test_window_is_timed_from_first_arrival_not_from_worker_wake():
    async def main():
        gate = threading.Event()
        engine = FakeEngine(gate=gate)
        b = await started(engine, max_batch_size=2, max_delay_ms=400)
        busy = asyncio.create_task(b.submit(x(0, n=2)))  # full: runs at once, blocks the engine
        await asyncio.to_thread(engine.started.wait, 5)
        waiting = asyncio.create_task(b.submit(x(5)))
        await asyncio.sleep(0.45)  # its window passes while the engine is busy
        t0 = time.monotonic()
        gate.set()
        await asyncio.gather(busy, waiting)
        after_engine_free = time.monotonic() - t0
        await b.stop()
        assert engine.sizes == [2, 1]
        assert after_engine_free < 0.2  # a window timed from the wake would add 0.4 s
    asyncio.run(main())


def test_full_batch_runs_without_waiting_for_window():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=4, max_delay_ms=2000)
        t0 = time.monotonic()
        await asyncio.gather(*(b.submit(x(i)) for i in range(4)))
        elapsed = time.monotonic() - t0
        await b.stop()
        assert engine.sizes == [4]
        assert elapsed < 1.0
    asyncio.run(main())


def test_rows_per_batch_never_exceed_max_batch_size():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=4, max_delay_ms=20)
        sizes = [3, 2, 1, 4, 1, 1, 2]
        results = await asyncio.gather(*(b.submit(x(100 * i, n)) for i, n in enumerate(sizes)))
        await b.stop()
        # FIFO: a request that does not fit closes the batch ahead of it.
        assert engine.sizes == [3, 3, 4, 4]
        for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
            assert torch.equal(out["y"], x(100 * i, n)["x"] * 2)
    asyncio.run(main())


def test_bad_requests_are_rejected_with_clear_errors():
    async def main():
        with pytest.raises(BatcherClosed, match="start"):
            await Batcher(FakeEngine(), max_batch_size=4).submit(x(0))
        b = await started(FakeEngine(), max_batch_size=4)
        with pytest.raises(ValueError, match=r"5 rows.*max_batch_size is 4"):
            await b.submit(x(0, n=5))  # larger than any batch: can never run
        with pytest.raises(ValueError, match="disagree on the batch size"):
            await b.submit({"x": torch.zeros(2, 3), "m": torch.zeros(1, 3)})
        with pytest.raises(ValueError, match="non-empty dict"):
            await b.submit({})
        with pytest.raises(TypeError, match="'x' is a list"):
            await b.submit({"x": [1.0]})
        with pytest.raises(ValueError, match="scalar"):
            await b.submit({"x": torch.tensor(1.0)})
        with pytest.raises(ValueError, match="timeout_ms must be > 0"):
            await b.submit(x(0), timeout_ms=0)
        assert b.stats.requests == 0 and b.stats.queue_depth == 0
        await b.stop()
    asyncio.run(main())
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        Batcher(FakeEngine(), max_batch_size=0)


def test_different_signatures_never_share_a_batch_and_keep_fifo():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=8, max_delay_ms=30)
        requests = [x(1), x(2, width=3), x(3), x(4, dtype=torch.float64), {"z": torch.ones(1, 2)},
                    x(5)]
        results = await asyncio.gather(*(b.submit(r) for r in requests))
        await b.stop()
        seen = [tuple((name, tuple(t.shape), t.dtype) for name, t in call.items())
                for call in engine.calls]
        assert seen == [  # the x (., 2) float32 group first: its oldest request came first
            (("x", (3, 2), torch.float32),),
            (("x", (1, 3), torch.float32),),
            (("x", (1, 2), torch.float64),),
            (("z", (1, 2), torch.float32),),
        ]
        for request, out in zip(requests, results, strict=True):
            assert torch.equal(out["y"], next(iter(request.values())) * 2)
            assert out["y"].dtype == next(iter(request.values())).dtype
    asyncio.run(main())


def test_requests_with_an_optional_input_never_share_a_batch_with_those_without():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=8, max_delay_ms=30)
        masked = {**x(10), "mask": torch.zeros(1, 2)}
        requests = [x(1), masked, x(2), {**x(11), "mask": torch.ones(1, 2)}]
        results = await asyncio.gather(*(b.submit(r) for r in requests))
        await b.stop()
        assert [sorted(call) for call in engine.calls] == [["x"], ["mask", "x"]]
        assert [call["x"][:, 0].tolist() for call in engine.calls] == [[1.0, 2.0], [10.0, 11.0]]
        assert torch.equal(engine.calls[1]["mask"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        for request, out in zip(requests, results, strict=True):
            assert torch.equal(out["y"], request["x"] * 2)
    asyncio.run(main())


def test_queue_full_rejects_at_once():
    async def main():
        b, engine, gate, busy = await busy_batcher(max_queue=3)  # x(0) is running, not queued
        tasks = [busy] + [asyncio.create_task(b.submit(x(i))) for i in (1, 2, 3)]
        await wait_until(lambda: b.stats.queue_depth == 3)
        t0 = time.monotonic()
        with pytest.raises(QueueFull, match=r"queue full \(3 waiting\); retry later") as err:
            await b.submit(x(4))
        assert time.monotonic() - t0 < 0.1 and err.value.status == 503
        gate.set()
        await asyncio.gather(*tasks)
        await b.stop()
        assert b.stats.rejected_full == 1 and engine.values() == [0, 1, 2, 3]
    asyncio.run(main())


def test_deadline_fires_while_engine_is_busy_and_skips_compute():
    async def main():
        b, engine, gate, busy = await busy_batcher(default_timeout_ms=80)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="50 ms") as err:
            await b.submit(x(1), timeout_ms=50)
        assert 0.04 < time.monotonic() - t0 < 1.0 and err.value.status == 504
        with pytest.raises(DeadlineExceeded, match="80 ms"):  # the default deadline
            await b.submit(x(2))
        assert not gate.is_set()  # both fired while the engine was still busy
        late = asyncio.create_task(b.submit(x(3), timeout_ms=30))
        await asyncio.sleep(0)  # queued
        gate.set()
        time.sleep(0.1)  # block the loop: the worker may see the deadline before the timer does
        await busy
        with pytest.raises(DeadlineExceeded):
            await late
        await b.stop()
        assert engine.values() == [0] and b.stats.expired == 3 and b.stats.queue_depth == 0
    asyncio.run(main())


def test_cancelled_request_leaves_queue_and_is_never_computed():
    async def main():
        b, engine, gate, busy = await busy_batcher()
        gone = asyncio.create_task(b.submit(x(1)))
        await wait_until(lambda: b.stats.queue_depth == 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert b.stats.queue_depth == 0 and b.stats.cancelled == 1
        gate.set()
        await busy
        await b.submit(x(2))
        await b.stop()
        assert engine.values() == [0, 2]
    asyncio.run(main())


def test_engine_error_fails_only_its_own_batch():
    def fail(batch):
        if (batch["x"] < 0).any():
            raise ValueError("negative pixel")

    async def main():
        engine = FakeEngine(fail=fail)
        b = await started(engine, max_batch_size=2, max_delay_ms=20)
        good, bad, other = await asyncio.gather(
            b.submit(x(1)), b.submit(x(-1)), b.submit(x(7, width=3)), return_exceptions=True)
        for err in (good, bad):  # shared the failing batch
            assert isinstance(err, EngineFailed) and err.status == 500
            assert "ValueError: negative pixel" in str(err)
        assert torch.equal(other["y"], x(7, width=3)["x"] * 2)  # another batch: unharmed
        later = await b.submit(x(3))  # the worker kept going
        await b.stop()
        assert torch.equal(later["y"], x(3)["x"] * 2)
        assert b.stats.failed == 2 and b.stats.oom_splits == 0 and engine.sizes == [2, 1, 1]
    asyncio.run(main())


def test_out_of_memory_splits_batch_and_reassembles_each_request():
    def fail(batch):
        if batch["x"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    async def main():
        engine = FakeEngine(fail=fail)
        b = await started(engine, max_batch_size=8, max_delay_ms=20)
        sizes = [1, 2, 3]
        results = await asyncio.gather(*(b.submit(x(100 * i, n)) for i, n in enumerate(sizes)))
        await b.stop()
        # 6 -> (1+2 | 3); 1+2 -> (1 | 2); the lone 3-row request by rows -> (1 | 2).
        assert engine.sizes == [6, 3, 1, 2, 3, 1, 2]
        assert b.stats.oom_splits == 3 and b.stats.failed == 0 and b.stats.batches == 1
        for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
            assert torch.equal(out["y"], x(100 * i, n)["x"] * 2)
    asyncio.run(main())


def test_out_of_memory_on_a_single_row_fails_it():
    def fail(batch):
        raise torch.cuda.OutOfMemoryError("allocator gave up")  # detected by type, not text

    async def main():
        engine = FakeEngine(fail=fail)
        b = await started(engine, max_batch_size=2, max_delay_ms=20)
        results = await asyncio.gather(b.submit(x(1)), b.submit(x(2)), return_exceptions=True)
        await b.stop()
        assert engine.sizes == [2, 1, 1] and b.stats.oom_splits == 1
        for err in results:
            assert isinstance(err, EngineFailed) and "allocator gave up" in str(err)
    asyncio.run(main())


def test_engine_runs_on_one_worker_thread_one_batch_at_a_time():
    async def main():
        engine = FakeEngine(delay=0.05)
        b = await started(engine, max_batch_size=2, max_delay_ms=5)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(b.submit(x(i, width=2 + i % 2)) for i in range(6)))
        tick.cancel()
        await b.stop()
        assert engine.sizes == [2, 2, 1, 1]  # two signatures, 3 requests each
        assert engine.max_active == 1
        assert len(engine.threads) == 1 and threading.get_ident() not in engine.threads
        assert ticks >= 10  # ~40 expected in 0.2 s of engine time: the loop stayed free
    asyncio.run(main())


def test_results_are_split_back_to_each_request_in_order():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=6, max_delay_ms=20)
        sizes = [1, 2, 3]
        results = await asyncio.gather(*(b.submit(x(100 * i, n)) for i, n in enumerate(sizes)))
        await b.stop()
        assert engine.sizes == [6] and engine.values() == [0, 100, 101, 200, 201, 202]
        for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
            assert out["y"].shape == (n, 2)
            assert torch.equal(out["y"], x(100 * i, n)["x"] * 2)
    asyncio.run(main())


def test_stop_drains_queued_requests_then_refuses_new_ones():
    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=8, max_delay_ms=1000)
        tasks = [asyncio.create_task(b.submit(x(i))) for i in range(3)]
        await wait_until(lambda: b.stats.queue_depth == 3)
        t0 = time.monotonic()
        stopping = asyncio.create_task(b.stop(drain=True))
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosed, match="stopping") as err:
            await b.submit(x(9))
        assert err.value.status == 503
        await stopping
        assert time.monotonic() - t0 < 0.5  # drained without waiting out the 1 s window
        assert all(t.done() for t in tasks) and engine.sizes == [3]
        for i, t in enumerate(tasks):
            assert torch.equal(t.result()["y"], x(i)["x"] * 2)
        with pytest.raises(BatcherClosed):
            await b.submit(x(9))
    asyncio.run(main())


def test_stop_without_drain_fails_queued_and_finishes_running():
    async def main():
        b, engine, gate, running = await busy_batcher()
        queued = [asyncio.create_task(b.submit(x(i))) for i in (1, 2)]
        await wait_until(lambda: b.stats.queue_depth == 2)
        stopping = asyncio.create_task(b.stop(drain=False))
        for t in queued:
            with pytest.raises(BatcherClosed, match="stopped before this request ran"):
                await t
        gate.set()
        await stopping
        assert torch.equal((await running)["y"], x(0)["x"] * 2) and engine.values() == [0]
    asyncio.run(main())


def test_stats_and_on_batch_callback(monkeypatch):
    monkeypatch.setattr(batcher_module, "HISTORY", 3)
    seen: list[tuple[int, float, float]] = []

    async def main():
        engine = FakeEngine()
        b = await started(engine, max_batch_size=4, max_delay_ms=5,
                          on_batch=lambda *args: seen.append(args))
        for n in (1, 2, 3, 4, 1):  # one request per batch: submitted one after another
            await b.submit(x(0, n))
        await b.stop()
        return b.stats

    stats = asyncio.run(main())
    assert [s[0] for s in seen] == [1, 2, 3, 4, 1]
    assert all(q >= 0 and c >= 0 for _, q, c in seen)
    assert stats.requests == 5 and stats.batches == 5 and stats.queue_depth == 0
    assert stats.batch_sizes == [3, 4, 1]  # the last HISTORY samples
    assert len(stats.queue_seconds) == 3 and len(stats.compute_seconds) == 3
