"""Dynamic batcher invariants: every caller gets its own result exactly once, in order, whatever
the arrival pattern; batches respect max_batch_size; failures fan out to one batch only."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.batching import BatcherClosed, DynamicBatcher, InferenceError, Overloaded
from service.metrics import Metrics


class Recorder:
    """Fake model: result = f(payload); records every batch it sees."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, payloads: list) -> list:
        with self.lock:
            self.batches.append(list(payloads))
        if self.fail_on is not None and self.fail_on in payloads:
            raise ValueError("injected fault")
        return [("result", p) for p in payloads]


def run(coro):
    return asyncio.run(coro)


class Gate:
    """Fake model that blocks every batch until ``release`` is set, then echoes its payloads."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, payloads: list) -> list:
        self.release.wait(5)
        return payloads


@settings(max_examples=40, deadline=None)
@given(
    requests=st.lists(st.lists(st.integers(0, 10_000), min_size=1, max_size=6), min_size=1, max_size=25),
    delays_ms=st.lists(st.sampled_from([0.0, 0.0, 0.5, 2.0]), min_size=25, max_size=25),
    max_batch_size=st.integers(1, 8),
    max_wait_ms=st.sampled_from([0.0, 1.0, 5.0]),
    workers=st.integers(1, 3),
)
def test_every_caller_gets_its_own_results_in_order(requests, delays_ms, max_batch_size, max_wait_ms, workers):
    fake = Recorder()

    async def scenario():
        batcher = DynamicBatcher("m", fake, max_batch_size, max_wait_ms, max_queue_items=10_000,
                                 workers=workers, metrics=Metrics())
        batcher.start()

        async def client(i, payloads):
            await asyncio.sleep(delays_ms[i] / 1000)
            return await batcher.submit(payloads)

        try:
            return await asyncio.gather(*(client(i, p) for i, p in enumerate(requests)))
        finally:
            await batcher.stop()

    answers = run(scenario())
    assert answers == [[("result", p) for p in payloads] for payloads in requests]
    assert all(1 <= len(b) <= max_batch_size for b in fake.batches)
    # each item ran exactly once
    assert sum(len(b) for b in fake.batches) == sum(len(r) for r in requests)


def test_concurrent_callers_are_batched_together():
    fake = Recorder()

    async def scenario():
        batcher = DynamicBatcher("m", fake, max_batch_size=16, max_wait_ms=50, max_queue_items=100)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
        finally:
            await batcher.stop()

    run(scenario())
    assert len(fake.batches) == 1 and sorted(fake.batches[0]) == list(range(10))


def test_failure_fails_only_its_batch_and_the_batcher_keeps_serving():
    fake = Recorder(fail_on="boom")

    async def scenario():
        batcher = DynamicBatcher("m", fake, max_batch_size=4, max_wait_ms=20, max_queue_items=100)
        batcher.start()
        try:
            results = await asyncio.gather(batcher.submit(["a"]), batcher.submit(["boom"]), batcher.submit(["b"]),
                                           return_exceptions=True)
            after = await batcher.submit(["c"])
            return results, after
        finally:
            await batcher.stop()

    results, after = run(scenario())
    assert all(isinstance(r, InferenceError) for r in results), results  # same batch: all three fail
    assert after == [("result", "c")]


def test_overload_is_rejected_at_once():
    slow = Gate()

    async def scenario():
        batcher = DynamicBatcher("m", slow, max_batch_size=1, max_wait_ms=0, max_queue_items=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.05)  # first is running, queue empty
        queued = asyncio.ensure_future(batcher.submit([2, 3, 4]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.submit([5])
        slow.release.set()
        assert await first == [1] and await queued == [2, 3, 4]
        await batcher.stop()

    run(scenario())


def test_stop_fails_queued_work_and_refuses_new_work():
    slow = Gate()

    async def scenario():
        batcher = DynamicBatcher("m", slow, max_batch_size=1, max_wait_ms=0, max_queue_items=10)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(["running"]))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.submit(["waiting"]))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        slow.release.set()
        await stopping
        assert await running == ["running"]  # accepted and running: completes
        with pytest.raises(BatcherClosed):
            await waiting
        with pytest.raises(BatcherClosed):
            await batcher.submit(["late"])

    run(scenario())


def test_cancelled_caller_is_dropped_before_inference():
    fake = Recorder()

    async def scenario():
        batcher = DynamicBatcher("m", fake, max_batch_size=8, max_wait_ms=30, max_queue_items=100)
        batcher.start()
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        await asyncio.sleep(0.005)
        gone.cancel()
        assert await batcher.submit(["kept"]) == [("result", "kept")]
        await batcher.stop()

    run(scenario())
    assert all("gone" not in b for b in fake.batches)
