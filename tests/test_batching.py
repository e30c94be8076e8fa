"""Dynamic batcher invariants: every caller gets its own results exactly once, in order, whatever
the arrival pattern; batches respect the size and token budgets and group similar lengths; the
oldest sequence is never starved; deadlines, overload and failures are answered, never stranded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presso.service.batching import (BatchLimits, BatcherClosed, DeadlineExceeded, DynamicBatcher, InferenceError,
                              Overloaded, select_batch)
from presso.service.metrics import Metrics


class Recorder:
    """Fake model: result = ("result", payload); records every batch it sees. ``gate`` (optional)
    blocks the first batch until set, so tests can fill the queue while a batch runs."""

    def __init__(self, fail_on: object = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list] = []
        self.fail_on = fail_on
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, payloads: list) -> list:
        with self.lock:
            first = not self.batches
            self.batches.append(list(payloads))
        if first and self.gate is not None:
            self.gate.wait(5)
        if self.fail_on is not None and self.fail_on in payloads:
            raise ValueError("injected fault")
        return [("result", p) for p in payloads]


def length(payload) -> int:
    """Payloads in these tests are (id, tokens)."""
    return payload[1]


def batcher(fake, workers: int = 1, **limits) -> DynamicBatcher:
    return DynamicBatcher("m", fake, BatchLimits(**limits), cost=length, workers=workers, metrics=Metrics())


async def started(b: DynamicBatcher) -> DynamicBatcher:
    b.start()
    return b


@settings(max_examples=40, deadline=None)
@given(
    requests=st.lists(st.lists(st.integers(1, 128), min_size=1, max_size=6), min_size=1, max_size=25),
    delays_ms=st.lists(st.sampled_from([0.0, 0.0, 0.5, 2.0]), min_size=25, max_size=25),
    max_batch_size=st.integers(1, 8),
    max_batch_tokens=st.sampled_from([64, 256, 4096]),
    max_wait_ms=st.sampled_from([0.0, 1.0, 5.0]),
    sort_window=st.integers(1, 16),
    workers=st.integers(1, 3),
)
def test_every_caller_gets_its_own_results_in_order(requests, delays_ms, max_batch_size, max_batch_tokens,
                                                    max_wait_ms, sort_window, workers):
    fake = Recorder()
    payloads = [[(f"{r}.{i}", n) for i, n in enumerate(lengths)] for r, lengths in enumerate(requests)]

    async def scenario():
        b = await started(batcher(fake, workers, max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                                  max_wait_ms=max_wait_ms, sort_window=sort_window, max_queue_items=10_000,
                                  max_queued_tokens=10**7))

        async def client(i, p):
            await asyncio.sleep(delays_ms[i] / 1000)
            return await b.submit(p)

        try:
            return await asyncio.gather(*(client(i, p) for i, p in enumerate(payloads)))
        finally:
            await b.stop()

    answers = asyncio.run(scenario())
    assert answers == [[("result", p) for p in request] for request in payloads]
    for batch in fake.batches:
        assert 1 <= len(batch) <= max_batch_size
        assert len(batch) == 1 or max(map(length, batch)) * len(batch) <= max_batch_tokens
    ran = [p for batch in fake.batches for p in batch]
    assert sorted(ran) == sorted(p for request in payloads for p in request)  # each exactly once


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(1, 512), min_size=1, max_size=64), max_batch_size=st.integers(1, 16),
       max_batch_tokens=st.integers(1, 2048), tolerance=st.sampled_from([0, 2, 8, 64, 10**9]))
def test_select_batch_respects_budgets_and_keeps_the_oldest(lengths, max_batch_size, max_batch_tokens, tolerance):
    limits = BatchLimits(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                         padding_tolerance_tokens=tolerance)
    chosen, full = select_batch(lengths, limits)
    assert chosen[0] == 0 and chosen == sorted(set(chosen))
    assert len(chosen) <= max_batch_size
    padded = max(lengths[i] for i in chosen) * len(chosen)
    assert len(chosen) == 1 or padded <= max_batch_tokens
    assert padded - sum(lengths[i] for i in chosen) <= tolerance * (len(chosen) - 1)  # each join adds <= tolerance
    if not full and tolerance == 10**9:  # nothing left out of the window but for padding
        assert len(chosen) == len(lengths)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 128), min_size=2, max_size=60), max_batch_size=st.integers(1, 8),
       sort_window=st.integers(1, 12))
def test_no_sequence_is_overtaken_by_more_than_the_documented_bound(lengths, max_batch_size, sort_window):
    """Queue everything behind a running batch, then count, for each sequence, the later arrivals
    that ran in earlier batches: at most (sort_window - 1) x (max_batch_size - 1)."""
    gate = threading.Event()
    fake = Recorder(gate=gate)

    async def scenario():
        b = await started(batcher(fake, max_batch_size=max_batch_size, max_batch_tokens=10**6,
                                  sort_window=sort_window))
        first = asyncio.ensure_future(b.submit([(-1, 1)]))
        await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(b.submit([(i, n)])) for i, n in enumerate(lengths)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *rest)
        await b.stop()

    asyncio.run(scenario())
    batch_of = {p[0]: k for k, batch in enumerate(fake.batches) for p in batch}
    bound = (sort_window - 1) * (max_batch_size - 1)
    for i in range(len(lengths)):
        overtaken_by = sum(1 for j in range(i + 1, len(lengths)) if batch_of[j] < batch_of[i])
        assert overtaken_by <= bound


def test_batches_group_similar_lengths_within_the_token_budget():
    gate = threading.Event()
    fake = Recorder(gate=gate)

    async def scenario():
        b = await started(batcher(fake, max_batch_size=3, max_batch_tokens=1000, sort_window=16))
        first = asyncio.ensure_future(b.submit([("first", 5)]))
        await asyncio.sleep(0.02)
        lengths = [10, 100, 12, 98, 11, 99, 300, 300, 300, 300]
        waiting = [asyncio.ensure_future(b.submit([(f"n{n}.{i}", n)])) for i, n in enumerate(lengths)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *waiting)
        await b.stop()

    asyncio.run(scenario())
    lengths_of = [sorted(length(p) for p in batch) for batch in fake.batches[1:]]
    assert lengths_of == [[10, 11, 12], [98, 99, 100], [300, 300, 300], [300]]  # 4 x 300 > 1000 tokens


def test_concurrent_callers_are_batched_together_while_the_batch_waits():
    fake = Recorder()

    async def scenario():
        b = await started(batcher(fake, max_batch_size=16, max_wait_ms=50))
        try:
            return await asyncio.gather(*(b.submit([(i, 8)]) for i in range(10)))
        finally:
            await b.stop()

    asyncio.run(scenario())
    assert len(fake.batches) == 1 and sorted(p[0] for p in fake.batches[0]) == list(range(10))


def test_a_lone_request_does_not_wait_with_max_wait_zero():
    fake = Recorder()

    async def scenario():
        b = await started(batcher(fake, max_batch_size=32, max_wait_ms=0))
        t0 = time.monotonic()
        await b.submit([("a", 8)])
        elapsed_s = time.monotonic() - t0
        await b.stop()
        return elapsed_s

    assert asyncio.run(scenario()) < 0.5  # generous: only "no max_wait", not a timing claim


def test_a_batch_run_at_once_settles_its_caller_and_frees_the_cores_whatever_happens():
    """An idle batcher runs a lone caller's batch at once, on the all-cores model, without the
    collector; a caller that leaves or whose deadline passes meanwhile is answered, the batch still
    runs to its end and only then gives the cores back; a failure is an InferenceError."""
    from presso.service.batching import CoreSlots

    gate = threading.Event()
    alone = Recorder(fail_on=("boom", 2), gate=gate)

    async def scenario():
        cores = CoreSlots(2)
        b = DynamicBatcher("m", Recorder(), BatchLimits(), cost=length, slots=cores, infer_alone=alone)  # never started
        gone = asyncio.ensure_future(b.submit([("gone", 2)]))
        await asyncio.sleep(0.02)
        assert (cores.running, cores.free) == (1, 0)
        gone.cancel()
        with pytest.raises(DeadlineExceeded):  # cores busy: this one queues (and nobody collects it)
            await b.submit([("late", 2)], deadline=time.monotonic() + 0.02)
        assert (cores.running, cores.free, cores.callers) == (1, 0, 0)  # still running after its caller left
        gate.set()
        await asyncio.sleep(0.05)
        assert (cores.running, cores.free) == (0, 2)
        assert await b.submit([("a", 2), ("b", 3)]) == [("result", ("a", 2)), ("result", ("b", 3))]
        with pytest.raises(InferenceError):
            await b.submit([("boom", 2)])
        assert (cores.running, cores.free, cores.callers) == (0, 2, 0)
        await b.stop()

    asyncio.run(scenario())
    assert alone.batches == [[("gone", 2)], [("a", 2), ("b", 3)], [("boom", 2)]]


def test_a_lone_caller_runs_at_once_only_what_the_queue_would_batch_together():
    """On idle cores a lone caller's sequences of very different lengths are still split by the
    padding bound (as the queue would), an empty call answers [] and no wait is negative."""
    fake = Recorder()
    metrics = Metrics()

    async def scenario():
        b = DynamicBatcher("m", fake, BatchLimits(), cost=length, workers=2, metrics=metrics)
        b.start()
        try:
            mixed = [(i, 4) for i in range(20)] + [("long", 70)]
            assert await b.submit(mixed) == [("result", p) for p in mixed]
            assert await b.submit([]) == []
            assert await b.submit([("x", 5), ("y", 6)]) == [("result", ("x", 5)), ("result", ("y", 6))]
        finally:
            await b.stop()

    asyncio.run(scenario())
    assert all(not (("long", 70) in batch and len(batch) > 1) for batch in fake.batches), fake.batches
    assert fake.batches[-1] == [("x", 5), ("y", 6)]  # within the padding bound: one batch, at once
    wait_sum = metrics.registry.get_sample_value("presso_queue_wait_seconds_sum", {"model": "m"})
    assert wait_sum is not None and wait_sum >= 0


def test_a_small_lone_batch_runs_on_the_event_loop_and_callers_arriving_together_still_share_a_batch():
    """With ``inline_max_ms``, a lone caller's batch expected (at the recent tokens per second) to
    fit in it runs on the event loop's thread; the first batch (no estimate yet) and a longer one,
    also after a batch that failed at once (failures do not update the estimate), run on an
    inference thread; two callers that arrive in the same loop iteration are batched
    together rather than each run alone; a failure is an InferenceError, a deadline that passes
    during the call a DeadlineExceeded, and the cores are free afterwards either way."""
    from presso.service.batching import CoreSlots

    threads: list[tuple[str, int]] = []

    def alone(payloads):
        threads.append((payloads[0][0], threading.get_ident()))
        if payloads[0][0] == "boom":
            raise ValueError("injected fault")  # at once
        time.sleep(0.002)  # 4 tokens: about 2 ms, 0.5 ms per token
        if payloads[0][0] == "slow":
            time.sleep(0.03)
        return [("result", p) for p in payloads]

    async def scenario():
        cores = CoreSlots(2)
        b = DynamicBatcher("m", alone, BatchLimits(inline_max_ms=50), cost=length, slots=cores,
                           infer_alone=alone, metrics=Metrics())
        b.start()
        try:
            loop_thread = threading.get_ident()
            assert await b.submit([("first", 4)]) == [("result", ("first", 4))]
            assert await b.submit([("a", 2), ("b", 2)]) == [("result", ("a", 2)), ("result", ("b", 2))]
            assert await b.submit([("big", 400)]) == [("result", ("big", 400))]  # about 200 ms expected
            together = await asyncio.gather(b.submit([("x", 4)]), b.submit([("y", 4)]))
            assert together == [[("result", ("x", 4))], [("result", ("y", 4))]]
            for _ in range(3):
                with pytest.raises(InferenceError):
                    await b.submit([("boom", 4)])
            assert await b.submit([("big", 400)]) == [("result", ("big", 400))]
            with pytest.raises(DeadlineExceeded):
                await b.submit([("slow", 4)], deadline=time.monotonic() + 0.01)
            assert (cores.running, cores.free, cores.callers) == (0, 2, 0)
            return loop_thread
        finally:
            await b.stop()

    loop_thread = asyncio.run(scenario())
    on_loop = {name for name, ident in threads if ident == loop_thread}
    assert on_loop == {"a", "boom", "slow"}, threads
    names = [name for name, _ in threads]
    assert names.count("x") + names.count("y") == 1, names  # x and y ran as one batch


def test_failure_fails_only_its_batch_and_the_batcher_keeps_serving():
    fake = Recorder(fail_on=("boom", 4))

    async def scenario():
        b = await started(batcher(fake, max_batch_size=4, max_wait_ms=20))
        try:
            results = await asyncio.gather(b.submit([("a", 4)]), b.submit([("boom", 4)]), b.submit([("b", 4)]),
                                           return_exceptions=True)
            after = await b.submit([("c", 4)])
            return results, after
        finally:
            await b.stop()

    results, after = asyncio.run(scenario())
    assert all(isinstance(r, InferenceError) for r in results), results  # same batch: all three fail
    assert after == [("result", ("c", 4))]


@pytest.mark.parametrize("limits", [
    {"max_queue_items": 3},      # 3 sequences queued: a 4th is refused
    {"max_queued_tokens": 100},  # 90 + 20 tokens > 100
])
def test_overload_is_rejected_at_once(limits):
    gate = threading.Event()
    fake = Recorder(gate=gate)

    async def scenario():
        b = await started(batcher(fake, max_batch_size=1, **limits))
        first = asyncio.ensure_future(b.submit([(1, 20)]))
        await asyncio.sleep(0.05)  # first is running, queue empty
        queued = asyncio.ensure_future(b.submit([(2, 30), (3, 30), (4, 30)]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as info:
            await b.submit([(5, 20)])
        assert info.value.retry_after_s >= 1
        gate.set()
        assert len(await first) == 1 and len(await queued) == 3
        assert await b.submit([(6, 10**6)]) == [("result", (6, 10**6))]  # an empty queue admits anything
        await b.stop()

    asyncio.run(scenario())


def test_deadline_passes_while_queued_and_the_sequence_never_runs():
    gate = threading.Event()
    fake = Recorder(gate=gate)

    async def scenario():
        b = await started(batcher(fake, max_batch_size=1))
        first = asyncio.ensure_future(b.submit([("first", 1)]))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await b.submit([("late", 1)], deadline=time.monotonic() + 0.05)
        assert b.queued == 0 and b.queued_tokens == 0
        gate.set()
        await first
        assert await b.submit([("next", 1)], deadline=time.monotonic() + 5) == [("result", ("next", 1))]
        with pytest.raises(DeadlineExceeded):
            await b.submit([("past", 1)], deadline=time.monotonic() - 1)
        await b.stop()

    asyncio.run(scenario())
    assert all(("late", 1) not in batch for batch in fake.batches)


def test_stop_fails_queued_work_and_refuses_new_work():
    gate = threading.Event()
    fake = Recorder(gate=gate)

    async def scenario():
        b = await started(batcher(fake, max_batch_size=1))
        running = asyncio.ensure_future(b.submit([("running", 1)]))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(b.submit([("waiting", 1)]))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
        assert await running == [("result", ("running", 1))]  # accepted and running: completes
        with pytest.raises(BatcherClosed):
            await waiting
        with pytest.raises(BatcherClosed):
            await b.submit([("late", 1)])

    asyncio.run(scenario())


def test_cancelled_caller_is_dropped_before_inference():
    fake = Recorder()

    async def scenario():
        b = await started(batcher(fake, max_batch_size=8, max_wait_ms=30))
        gone = asyncio.ensure_future(b.submit([("gone", 1)]))
        await asyncio.sleep(0.005)
        gone.cancel()
        assert await b.submit([("kept", 1)]) == [("result", ("kept", 1))]
        await b.stop()

    asyncio.run(scenario())
    assert all(("gone", 1) not in b for b in fake.batches)


def test_batch_metrics_count_padding():
    fake = Recorder()
    metrics = Metrics()

    async def scenario():
        b = DynamicBatcher("m", fake, BatchLimits(max_batch_size=8, max_wait_ms=50, padding_tolerance_tokens=20),
                           cost=length, metrics=metrics)
        b.start()
        await asyncio.gather(b.submit([("a", 10)]), b.submit([("b", 30)]))
        await b.stop()

    asyncio.run(scenario())
    value = metrics.registry.get_sample_value
    assert value("presso_batch_tokens_sum", {"model": "m"}) == 60  # 2 x 30 padded
    assert value("presso_padding_ratio_sum", {"model": "m"}) == pytest.approx(1 - 40 / 60)
    assert value("presso_queue_tokens", {"model": "m"}) == 0


def test_models_sharing_cores_never_run_more_batches_than_cores_and_idle_models_hold_none():
    """Two models' batchers on one CoreSlots(1): their batches never overlap, an idle model holds
    no core (the other model's work runs), and the all-cores session runs only for a batch that
    is alone across both models."""
    from presso.service.batching import CoreSlots

    active, peak, lock = [0], [0], threading.Lock()
    sessions: list[str] = []

    def model(session: str):
        def infer(payloads):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                sessions.append(session)
            time.sleep(0.01)
            with lock:
                active[0] -= 1
            return [("result", p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(1)
        a = DynamicBatcher("a", model("a"), BatchLimits(max_batch_size=2), cost=length, slots=cores,
                           infer_alone=model("a-alone"))
        b = DynamicBatcher("b", model("b"), BatchLimits(max_batch_size=2), cost=length, slots=cores,
                           infer_alone=model("b-alone"))
        a.start()
        b.start()
        try:
            alone = await asyncio.wait_for(b.submit([(0, 4)]), 5)  # a idle: b gets the core at once
            assert alone == [("result", (0, 4))] and sessions == ["b-alone"]
            answers = await asyncio.wait_for(asyncio.gather(
                *(a.submit([(i, 4)]) for i in range(6)), *(b.submit([(i, 4)]) for i in range(6))), 10)
            assert [r[0][1][0] for r in answers] == list(range(6)) * 2
        finally:
            await a.stop()
            await b.stop()
        assert cores.running == 0 and cores.waiting == 0

    asyncio.run(scenario())
    assert peak[0] == 1  # one core: never two batches at once, across models
    assert "a" in sessions and "b" in sessions  # under load both models ran on the shared session


def test_an_all_cores_batch_holds_every_core_and_runs_only_when_every_caller_is_in_it():
    """CoreSlots(2): a lone caller's batch runs on the all-cores session and holds both slots, so
    another model's batch waits for it instead of running beside it (more threads than cores);
    while a caller waits on another model, batches run one per core, never on the all-cores session."""
    from presso.service.batching import CoreSlots

    spans: list[tuple[str, object, float, float]] = []

    def model(session: str):
        def infer(payloads):
            start = time.monotonic()
            time.sleep(0.02)
            spans.append((session, payloads[0][0], start, time.monotonic()))
            return [("result", p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(2)
        a = DynamicBatcher("a", model("a"), BatchLimits(), cost=length, slots=cores, infer_alone=model("a-all"))
        b = DynamicBatcher("b", model("b"), BatchLimits(), cost=length, slots=cores, infer_alone=model("b-all"))
        a.start()
        b.start()
        try:
            first = asyncio.ensure_future(a.submit([("lone", 4)]))
            await asyncio.sleep(0.005)  # a's lone batch is running on every core
            second = asyncio.ensure_future(b.submit([("after", 4)]))
            await asyncio.wait_for(asyncio.gather(first, second), 5)
            # two callers queued at once, one per model (behind a lone batch): each batch then takes
            # one core, side by side
            blocker = asyncio.ensure_future(a.submit([("blocker", 4)]))
            await asyncio.sleep(0.005)
            await asyncio.wait_for(asyncio.gather(a.submit([("side-a", 4)]), b.submit([("side-b", 4)]), blocker), 5)
        finally:
            await a.stop()
            await b.stop()
        assert cores.running == 0 and cores.waiting == 0 and cores.callers == 0

    asyncio.run(scenario())
    by_payload = {payload: (session, start, end) for session, payload, start, end in spans}
    assert by_payload["lone"][0] == "a-all" and by_payload["after"][1] >= by_payload["lone"][2]  # b's batch waited
    (_, start_a, end_a), (_, start_b, end_b) = by_payload["side-a"], by_payload["side-b"]
    assert (by_payload["side-a"][0], by_payload["side-b"][0]) == ("a", "b") and start_b < end_a and start_a < end_b


def test_core_slots_hand_a_cancelled_waiters_slot_on_and_lose_none():
    """A waiter cancelled while queued leaves the queue; one cancelled after its grant passes the
    slot to the next waiter; in the end every slot is free again."""
    from presso.service.batching import CoreSlots

    async def scenario():
        cores = CoreSlots(1)
        await cores.acquire()
        queued = [asyncio.ensure_future(cores.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        assert cores.waiting == 3
        queued[0].cancel()  # cancelled while queued
        await asyncio.sleep(0)
        cores.release()  # granted to queued[1] ...
        queued[1].cancel()  # ... which is cancelled before it ran: queued[2] gets the slot
        await asyncio.gather(*queued, return_exceptions=True)
        assert queued[2].done() and not queued[2].cancelled() and cores.waiting == 0
        late = asyncio.ensure_future(cores.acquire())
        await asyncio.sleep(0)
        late.cancel()  # cancelled, and a release passes over its waiter before it resumes
        cores.release()
        await asyncio.gather(late, return_exceptions=True)
        assert late.cancelled() and cores.waiting == 0 and cores.free == 1
        await cores.acquire()
        cores.release()
        assert cores.hold_all(callers_in_batch=0) is None  # the caller holds no slot: nothing to complete
        await asyncio.wait_for(cores.acquire(), 1)
        cores.running = 1
        assert cores.hold_all(callers_in_batch=0) == 0  # one core: nothing else to take

    asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(plan=st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 64), st.sampled_from([0.0, 0.0, 1.0, 3.0]),
                               st.sampled_from([None, None, 0.0, 2.0])), min_size=1, max_size=20),
       workers=st.integers(1, 3), inline=st.sampled_from([0.0, 5.0]))
def test_models_sharing_cores_settle_every_caller_and_free_every_core(plan, workers, inline):
    """Two models on one CoreSlots, callers arriving at random and some cancelled (at once or after
    2 ms), lone batches run on inference threads or on the event loop (``inline_max_ms``):
    every caller that stays gets its own result, batches never run on more slots than there are,
    and afterwards every slot is free and no caller is counted."""
    from presso.service.batching import CoreSlots

    active, peak, lock = [0], [0], threading.Lock()

    def model(cores_taken: int):
        def infer(payloads):
            with lock:
                active[0] += cores_taken
                peak[0] = max(peak[0], active[0])
            time.sleep(0.001)
            with lock:
                active[0] -= cores_taken
            return [("result", p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(workers)
        batchers = {name: DynamicBatcher(name, model(1), BatchLimits(max_batch_size=4, inline_max_ms=inline),
                                         cost=length, slots=cores, infer_alone=model(workers)) for name in "ab"}
        for b in batchers.values():
            b.start()

        async def client(i, name, n, delay_ms):
            await asyncio.sleep(delay_ms / 1000)
            return await batchers[name].submit([(i, n)])

        tasks = [asyncio.ensure_future(client(i, name, n, delay)) for i, (name, n, delay, _) in enumerate(plan)]
        for task, (*_, cancel_after_ms) in zip(tasks, plan):
            if cancel_after_ms is not None:
                asyncio.get_running_loop().call_later(cancel_after_ms / 1000, task.cancel)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for b in batchers.values():
            await b.stop()
        return cores, outcomes

    cores, outcomes = asyncio.run(scenario())
    for i, ((_, n, _, cancel_after_ms), outcome) in enumerate(zip(plan, outcomes)):
        if cancel_after_ms is None:
            assert outcome == [("result", (i, n))]
        else:
            assert isinstance(outcome, asyncio.CancelledError) or outcome == [("result", (i, n))]
    assert peak[0] <= workers  # an all-cores batch counts as every core
    assert cores.running == 0 and cores.waiting == 0 and cores.callers == 0 and cores.free == workers


def test_a_thread_whose_batch_ends_runs_the_next_batch_when_every_core_is_busy():
    """CoreSlots(1), a batch running and batches queued on two models: the thread whose batch ends
    keeps the core and runs the next batch itself, the model first in line for a core first, the
    models taking turns; no slot is lost, every caller gets its own results; a caller whose
    deadline passed while queued is answered with DeadlineExceeded and its sequence never runs."""
    from presso.service.batching import CoreSlots

    gate = threading.Event()
    order: list[tuple[str, int, list]] = []  # (model, thread, payloads)

    def model(name: str):
        def infer(payloads):
            order.append((name, threading.get_ident(), [p[0] for p in payloads]))
            if len(order) == 1:
                gate.wait(5)
            time.sleep(0.01)  # long enough for the event loop to put the collector back in line
            return [("result", p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(1)
        a = DynamicBatcher("a", model("a"), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        b = DynamicBatcher("b", model("b"), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        a.start()
        b.start()
        try:
            first = asyncio.ensure_future(a.submit([("a0", 4)]))
            await asyncio.sleep(0.02)  # a0 runs (at once, every core) and blocks on the gate
            queued = [asyncio.ensure_future(b.submit([("b1", 4)])), asyncio.ensure_future(a.submit([("a1", 4)])),
                      asyncio.ensure_future(b.submit([("b2", 4)])), asyncio.ensure_future(a.submit([("a2", 4)]))]
            late = asyncio.ensure_future(a.submit([("late", 4)], deadline=time.monotonic() + 0.01))
            await asyncio.sleep(0.05)  # both collectors wait in line for the core; late's deadline passes
            gate.set()
            answers = await asyncio.wait_for(asyncio.gather(first, *queued), 5)
            with pytest.raises(DeadlineExceeded):
                await late
            return answers, cores
        finally:
            await a.stop()
            await b.stop()

    answers, cores = asyncio.run(scenario())
    assert [r[0][1][0] for r in answers] == ["a0", "b1", "a1", "b2", "a2"]
    assert cores.running == 0 and cores.waiting == 0 and cores.callers == 0 and cores.free == 1
    ran = [payloads for _, _, payloads in order]
    assert ["late"] not in ran
    # after a0 (run at once from the caller), the queued batches ran one after the other on one thread
    # without going back to the event loop, the models taking turns
    assert [name for name, _, _ in order[1:]] == ["b", "a", "b", "a"]
    assert len({thread for _, thread, _ in order[2:]}) == 1


def test_stopping_a_model_whose_thread_runs_another_models_batches_does_not_wait_for_that_load():
    """A thread of model a that went on to model b's batches stops taking more once a is stopped,
    so a.stop() returns after one batch while b keeps serving."""
    from presso.service.batching import CoreSlots

    def model(name: str, delay_s: float):
        def infer(payloads):
            time.sleep(delay_s)
            return [(name, p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(1)
        a = DynamicBatcher("a", model("a", 0.005), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        b = DynamicBatcher("b", model("b", 0.005), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        a.start()
        b.start()
        load = [asyncio.ensure_future(b.submit([(i, 4)])) for i in range(200)]
        await asyncio.sleep(0)
        answers = await asyncio.gather(*(a.submit([(i, 4)]) for i in range(3)))
        t0 = time.monotonic()
        await a.stop()
        stopped_in_s = time.monotonic() - t0
        results = await asyncio.wait_for(asyncio.gather(*load), 10)
        await b.stop()
        return answers, stopped_in_s, results, cores

    answers, stopped_in_s, results, cores = asyncio.run(scenario())
    assert answers == [[("a", (i, 4))] for i in range(3)]
    assert results == [[("b", (i, 4))] for i in range(200)]
    assert stopped_in_s < 0.5  # b's queue alone takes about 1 s
    assert cores.running == 0 and cores.waiting == 0 and cores.free == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_draining_beside_a_busy_model_still_runs_what_it_accepted(workers):
    """A reload's drain: model b (the old version) has requests queued when it is stopped with a
    drain while model x keeps every core busy; inference threads keep taking b's batches until the
    drain ends, so b's accepted requests run (not BatcherClosed after the whole drain); and a
    plain waiter for a core (no batcher) still gets one under that load."""
    from presso.service.batching import CoreSlots

    def model(name: str):
        def infer(payloads):
            time.sleep(0.002)
            return [(name, p) for p in payloads]
        return infer

    async def scenario():
        cores = CoreSlots(workers)
        x = DynamicBatcher("x", model("x"), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        b = DynamicBatcher("b", model("b"), BatchLimits(max_batch_size=1), cost=length, slots=cores)
        x.start()
        b.start()
        load = [asyncio.ensure_future(x.submit([(i, 4)])) for i in range(1500 * workers)]  # about 3 s
        await asyncio.sleep(0.03)  # x saturates the cores
        accepted = [asyncio.ensure_future(b.submit([(i, 4)])) for i in range(3)]
        await asyncio.sleep(0)
        t0 = time.monotonic()
        await b.stop(drain_s=2.0)
        drained_in_s = time.monotonic() - t0
        outcomes = await asyncio.gather(*accepted, return_exceptions=True)
        await asyncio.wait_for(cores.acquire(), 1)  # no owner: granted through the event loop
        cores.release()
        await x.stop()  # x's remaining load is answered BatcherClosed
        await asyncio.gather(*load, return_exceptions=True)
        return drained_in_s, outcomes, cores

    drained_in_s, outcomes, cores = asyncio.run(scenario())
    assert outcomes == [[("b", (i, 4))] for i in range(3)]
    assert drained_in_s < 1.0  # x's load alone takes about 3 s; the drain waits only for b's queue
    assert cores.running == 0 and cores.waiting == 0 and cores.free == workers
