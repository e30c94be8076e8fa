"""Scheduling layer: a dynamic batcher per model on asyncio, inference in worker threads.

Callers submit sequences (payloads with a token count). When a worker is free, the collector
forms a batch from the oldest ``sort_window`` queued sequences: the oldest one always, then the
others closest to it in length, while the batch holds at most ``max_batch_size`` sequences and
``max_batch_tokens`` padded tokens (longest sequence x sequences: what a padded encoder computes).
A batch that could still grow waits for more arrivals until ``max_wait_ms`` after its oldest
sequence was enqueued (monotonic clock; the close time is fixed by that arrival, so time spent
queued while every worker was busy counts against it). With ``max_wait_ms=0`` (the default, like
Triton's ``max_queue_delay_microseconds``) a batch is whatever is queued when a worker frees up,
so a lone request never waits and batches grow with load. Inference runs in a thread pool (ONNX
Runtime releases the GIL), so the event loop never waits for a batch, but for a short lone one
(below). While every core is busy, a thread whose batch ends keeps its core and takes the next
ready batch itself, of this model or of another one waiting on the same cores
(:meth:`CoreSlots.take_next`, :mod:`presso.service.cores`); results are still settled on the event
loop. A caller that finds every core idle (nothing queued, running or waiting on any model, no
other caller) and whose sequences the queue would run as one batch (:func:`select_batch` takes them
all) skips the queue: its batch starts from :meth:`DynamicBatcher.submit` itself on the all-cores
session, without waking the collector task (measured: 0.4-0.9 ms less per lone request in-process
on 2 cores, where the whole call takes 4-5 ms). Such a batch expected to take at most
``inline_max_ms`` (its tokens times this model's recent seconds per token) runs on the event loop's
own thread: the loop is blocked for that one short call (every core is taken, so a request arriving
meanwhile would wait for one anyway), and the two thread hand-offs, to an inference thread and
back, are saved (measured over HTTP at 1 client on 2 cores: p50 1.92-2.05 -> 1.82-1.94 ms, where
the single call takes 1.4 ms).

Fairness: the oldest queued sequence is in every next batch, so a sequence at queue position
``p < sort_window`` runs within ``p + 1`` batches, and at most ``(sort_window - 1) x
(max_batch_size - 1)`` later arrivals run before it (sequences outside the window cannot).

Guarantees, after MLServer's adaptive batcher (``mlserver/batching/adaptive.py``) and TEI's queue
(``core/src/queue.rs``): every submitted sequence's future is settled exactly once; an exception
in inference fails every sequence of that batch (and only that batch) and the batcher keeps
serving; a caller that left or whose deadline passed is dropped before inference; admission
beyond ``max_queued_tokens`` / ``max_queue_items`` is refused at once with :class:`Overloaded`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Sequence

from presso.service.cores import CoreSlots

__all__ = ["BatchLimits", "BatcherClosed", "CoreSlots", "DeadlineExceeded", "DynamicBatcher", "InferenceError",
           "Overloaded", "select_batch"]

log = logging.getLogger(__name__)

InferFn = Callable[[list[Any]], list[Any]]
CostFn = Callable[[Any], int]


@dataclass(frozen=True)
class BatchLimits:
    """Batch-forming and admission bounds (see the module docstring); mirrors :class:`Settings`."""

    max_batch_size: int = 32
    max_batch_tokens: int = 4096
    max_wait_ms: float = 0.0
    sort_window: int = 128
    padding_tolerance_tokens: int = 8
    max_queue_items: int = 4096
    max_queued_tokens: int = 262_144
    inline_max_ms: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> "BatchLimits":
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


class Overloaded(RuntimeError):
    """The queue is over its bound; retry after ``retry_after_s`` (estimated from throughput)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before all of its sequences ran."""


class BatcherClosed(RuntimeError):
    """The batcher is stopping or stopped and accepts no work."""


class InferenceError(RuntimeError):
    """Inference failed for the batch this sequence was in."""


@dataclass(eq=False)
class _Item:
    payload: Any
    tokens: int
    future: asyncio.Future
    deadline: float | None
    caller: object = None  # one per submit call
    enqueued_at: float = field(default_factory=time.monotonic)


def select_batch(lengths: Sequence[int], limits: BatchLimits) -> tuple[list[int], bool]:
    """Choose the next batch from a window of queued sequences (oldest first).

    Args:
        lengths: ``[window]`` token count of each queued sequence, oldest first (non-empty).
        limits: batch bounds.

    Returns:
        Indices into ``lengths`` (ascending; always including 0, the oldest) and whether the batch
        is full: another sequence would exceed ``max_batch_size`` or ``max_batch_tokens``. The
        oldest sequence runs even when it alone exceeds the token budget. Candidates are taken
        closest in length to the oldest first; one that would add more than
        ``padding_tolerance_tokens`` padding tokens (to itself or to those already chosen) waits
        for a batch of its own length: a padded token costs as much as a real one, so padding
        only pays while it is cheaper than the fixed cost of another batch.
    """
    anchor = lengths[0]
    chosen, longest, full = [0], anchor, False
    for i in sorted(range(1, len(lengths)), key=lambda i: (abs(lengths[i] - anchor), i)):
        if len(chosen) >= limits.max_batch_size:
            full = True
            break
        candidate = max(longest, lengths[i])
        if candidate * (len(chosen) + 1) > limits.max_batch_tokens:
            full = True
            continue
        # padding this sequence adds: to itself, or to every sequence already chosen
        if (candidate - longest) * len(chosen) + (candidate - lengths[i]) > limits.padding_tolerance_tokens:
            continue
        chosen.append(i)
        longest = candidate
    full = full or len(chosen) >= limits.max_batch_size or longest * (len(chosen) + 1) > limits.max_batch_tokens
    return sorted(chosen), full


class DynamicBatcher:
    """Groups sequences from concurrent callers into batches for ``infer``.

    Args:
        name: model name (metrics label, logs).
        infer: ``list[payload] -> list[result]`` of the same length and order; runs in a worker thread.
        infer_alone: used instead of ``infer`` for a batch that runs while no other batch runs and
            nothing is queued; such a batch holds every core slot while it runs (e.g. a session
            using every core: lowest latency at low load, while loaded batches run side by side on
            one core each).
        limits: batch and queue bounds.
        cost: tokens of one payload (``[seq_len]`` of its encoding); default 1 per payload.
        workers: batches that may run concurrently (threads), when ``slots`` is not given.
        slots: cores shared with other models' batchers (:class:`CoreSlots`); default: this
            batcher's own ``workers``.
        metrics: a :class:`presso.service.metrics.Metrics` or None.
    """

    def __init__(self, name: str, infer: InferFn, limits: BatchLimits, cost: CostFn | None = None,
                 workers: int = 1, metrics=None, infer_alone: InferFn | None = None,
                 slots: CoreSlots | None = None) -> None:
        self.name = name
        self.limits = limits
        self._infer = infer
        self._infer_alone = infer_alone or infer
        self._cost = cost or (lambda _payload: 1)
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._queued_tokens = 0
        self._arrival = asyncio.Event()
        self._slots = slots or CoreSlots(workers)
        self._executor = ThreadPoolExecutor(max_workers=self._slots.workers, thread_name_prefix=f"infer-{name}")
        self._collector: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight = 0  # batches taken from the queue and not yet settled (guarded by the cores' lock)
        self._batch_ended = asyncio.Event()
        self._at_once: set = set()  # concurrent futures of batches run by _run_at_once
        self._closed = False
        self._thread_takes = True  # inference threads may take this queue's batches (until a stop has drained)
        self._s_per_token = 0.0  # moving average over batches that succeeded: Retry-After, inline_max_ms

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._collector = self._loop.create_task(self._collect_forever(), name=f"batcher-{self.name}")

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting work, finish running batches, fail whatever is still queued.

        ``drain_s`` > 0 (a model being replaced): first keep running queued sequences for up to
        that long, so requests already accepted finish on this model; the queue gauges are then
        left to the batcher that took over the model's name.
        """
        self._closed = True
        deadline = time.monotonic() + drain_s
        while drain_s and self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        with self._slots.lock:  # drained: from now on no inference thread takes this model's batches,
            self._thread_takes = False  # nor, being this model's, goes on to another model's
        if self._collector:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        while self._inflight:  # no thread raises it any more: only the event loop lowers it
            self._batch_ended.clear()
            await self._batch_ended.wait()
        if self._at_once:
            await asyncio.gather(*map(asyncio.wrap_future, self._at_once), return_exceptions=True)
        with self._slots.lock:
            queued, self._queue, self._queued_tokens = list(self._queue), deque(), 0
            if not drain_s:
                self._gauge()
        for item in queued:
            _settle(item.future, exc=BatcherClosed(f"model {self.name} is shutting down"))
        # a thread of this model may be running another model's batch: wait for it off the loop
        await asyncio.to_thread(self._executor.shutdown, True)

    # -- callers -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    async def submit(self, payloads: Sequence[Any], deadline: float | None = None) -> list[Any]:
        """Queue ``payloads`` as separate sequences and wait for all results, in order.

        Args:
            payloads: the request's sequences.
            deadline: ``time.monotonic()`` value after which the caller no longer wants results.

        With ``max_wait_ms=0``, idle cores (:meth:`CoreSlots.take_all`) and sequences that the queue
        would run as one batch (size, token and padding bounds), they run at once as that batch on
        ``infer_alone`` (see the module docstring).

        Raises:
            Overloaded: the queue cannot take these sequences now (an empty queue always can).
            DeadlineExceeded: ``deadline`` passed first; sequences not yet run are dropped.
            BatcherClosed: the batcher is stopping.
            InferenceError: inference failed for a batch holding one of the sequences.
        """
        if self._closed:
            raise BatcherClosed(f"model {self.name} is shutting down")
        tokens = [int(self._cost(p)) for p in payloads]
        if self._queue and (len(self._queue) + len(tokens) > self.limits.max_queue_items
                            or self._queued_tokens + sum(tokens) > self.limits.max_queued_tokens):
            raise Overloaded(f"queue full for model {self.name}: {len(self._queue)} sequences, "
                             f"{self._queued_tokens} tokens queued (limits {self.limits.max_queue_items} "
                             f"sequences, {self.limits.max_queued_tokens} tokens)", self._retry_after_s())
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("deadline passed before the request was queued")
        if not self._queue and not self.limits.max_wait_ms and self._one_batch(tokens):
            inline = self._short(tokens)
            if inline and self._slots.idle():
                # Requests that arrived together are read in one loop iteration and reach here one
                # after the other: step aside once, counted as a caller, so that they queue and run
                # as one batch; an inline call now would run each of them alone.
                self._slots.callers += 1
                try:
                    await asyncio.sleep(0)
                finally:
                    self._slots.callers -= 1
                if self._closed:
                    raise BatcherClosed(f"model {self.name} is shutting down")
                if deadline is not None and deadline <= time.monotonic():
                    raise DeadlineExceeded("deadline passed before the request was queued")
            slots = None if self._queue else self._slots.take_all()
            if slots is not None:
                if inline:
                    return self._run_inline(list(payloads), tokens, deadline, slots)
                return await self._run_at_once(list(payloads), tokens, deadline, slots)
        loop = asyncio.get_running_loop()
        caller = object()
        items = [_Item(p, t, loop.create_future(), deadline, caller) for p, t in zip(payloads, tokens)]
        self._slots.callers += 1
        with self._slots.lock:
            self._queue.extend(items)
            self._queued_tokens += sum(tokens)
            self._gauge()
        self._arrival.set()
        waiter = asyncio.gather(*(item.future for item in items))
        waiter.add_done_callback(_retrieve)  # a cancelled caller leaves nobody to read its outcome
        try:
            if deadline is None:
                return list(await waiter)
            try:
                return list(await asyncio.wait_for(waiter, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise DeadlineExceeded("deadline passed before every text ran") from None
        except BaseException:
            self._discard(items)  # caller gone, deadline passed or one sequence failed: drop the rest
            raise
        finally:
            self._slots.callers -= 1

    def _short(self, tokens: list[int]) -> bool:
        """Whether a batch of these sequences (``[n]`` token counts) is expected to take at most
        ``inline_max_ms`` at this model's recent seconds per token (never before a batch has run)."""
        return self._s_per_token > 0 and 1000.0 * sum(tokens) * self._s_per_token <= self.limits.inline_max_ms

    def _one_batch(self, tokens: list[int]) -> bool:
        """Whether the queue would run these sequences (``[n]`` token counts) as one batch: within
        the size, token and padding bounds (:func:`select_batch`)."""
        return bool(tokens) and len(select_batch(tokens, self.limits)[0]) == len(tokens)

    async def _run_at_once(self, payloads: list[Any], tokens: list[int], deadline: float | None, slots: int) -> list:
        """One caller's sequences on idle cores (``slots``, all of them, already taken): one batch on
        ``infer_alone`` straight from the caller, without the queue and the collector task. The
        batch runs to its end even if the caller leaves; the cores are given back when it ends."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        answer = loop.create_future()
        self._slots.callers += 1
        self._observe_batch(tokens, [0.0] * len(tokens))
        try:
            work = self._executor.submit(self._infer_alone, payloads)
        except BaseException:
            self._slots.callers -= 1
            self._finished(time.monotonic() - started, sum(tokens), slots, ok=False)
            raise
        self._at_once.add(work)
        work.add_done_callback(lambda done: loop.call_soon_threadsafe(
            self._at_once_done, done, answer, started, sum(tokens), len(payloads), slots))
        try:
            if deadline is None:
                return await answer
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    return await answer
            except TimeoutError:
                raise DeadlineExceeded("deadline passed before every text ran") from None
        finally:
            self._slots.callers -= 1

    def _run_inline(self, payloads: list[Any], tokens: list[int], deadline: float | None, slots: int) -> list:
        """One caller's sequences on idle cores (``slots``, all of them, already taken), run by
        ``infer_alone`` on the event loop's own thread (see the module docstring); the cores are
        given back when it returns.

        Raises:
            InferenceError: ``infer_alone`` failed or returned another number of results.
            DeadlineExceeded: ``deadline`` passed while the batch ran.
        """
        started = time.monotonic()
        self._observe_batch(tokens, [0.0] * len(tokens))
        ok = False
        try:
            results = self._checked(self._infer_alone(payloads), len(payloads))
            ok = True
        except Exception as exc:
            log.error("batch of %d failed on model %s", len(payloads), self.name, exc_info=exc)
            raise _as_inference_error(exc) from None
        finally:
            self._finished(time.monotonic() - started, sum(tokens), slots, ok)
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline passed before every text ran")
        return list(results)

    def _at_once_done(self, work, answer: asyncio.Future, started: float, tokens: int, size: int,
                      slots: int) -> None:
        self._at_once.discard(work)
        ok = False
        try:
            _settle(answer, result=list(self._checked(work.result(), size)))
            ok = True
        except BaseException as exc:  # settle the caller's future, whatever happened
            log.error("batch of %d failed on model %s", size, self.name, exc_info=exc)
            _settle(answer, exc=_as_inference_error(exc))
        finally:
            self._finished(time.monotonic() - started, tokens, slots, ok)

    def _checked(self, results: list, size: int) -> list:
        """``results`` of a batch of ``size`` sequences.

        Raises:
            InferenceError: the model returned another number of results.
        """
        if len(results) != size:
            raise InferenceError(f"model {self.name} returned {len(results)} results for {size} inputs")
        return results

    def _finished(self, elapsed_s: float, tokens: int, slots: int, ok: bool, release: bool = True) -> None:
        """A batch of ``tokens`` that held ``slots`` core slots ran for ``elapsed_s`` and ended; ``ok``:
        it returned its results. Only those update the seconds per token (a batch that fails at once
        would make the model look fast), averaged as seconds per token so that one slow batch moves
        the estimate as much as it is slow. ``release`` False: its thread still holds the slot (it runs
        the next batch on it, counted as running instead, or gives it back itself)."""
        if ok:
            cost = elapsed_s / max(tokens, 1)
            self._s_per_token = cost if not self._s_per_token else 0.8 * self._s_per_token + 0.2 * cost
        if self._metrics:
            self._metrics.inference_latency.labels(model=self.name).observe(elapsed_s)
        if release:
            self._slots.batch_ended(slots)

    def _discard(self, items: list[_Item]) -> None:
        for item in items:
            item.future.cancel()
        gone = set(map(id, items))
        with self._slots.lock:
            if not any(id(i) in gone for i in self._queue):
                return
            self._queue = deque(i for i in self._queue if id(i) not in gone)
            self._queued_tokens = sum(i.tokens for i in self._queue)
            self._gauge()

    # -- collector ---------------------------------------------------------------------------

    async def _collect_forever(self) -> None:
        while True:
            while not self._queue:  # a core is taken only with work queued: an idle model holds none
                self._arrival.clear()
                await self._arrival.wait()
            await self._slots.acquire(self)
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            self._launch(batch)

    async def _next_batch(self) -> list[_Item]:
        """The next batch, or [] when the queue emptied (callers left, or inference threads took
        the batches) while it waited for a core."""
        while True:
            with self._slots.lock:
                if not self._queue:
                    return []
                batch, remaining = self._ready_batch()
            if batch:
                live = self._live(batch)
                if live:
                    with self._slots.lock:
                        self._inflight += 1
                    return live
                continue
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _ready_batch(self) -> tuple[list[_Item], float]:
        """(Holding the cores' lock, the queue not empty.) The batch :func:`select_batch` forms now,
        taken out of the queue, when it is full or its oldest sequence has waited ``max_wait_ms``;
        else [] and the seconds left until then."""
        window = list(islice(self._queue, self.limits.sort_window))
        chosen, full = select_batch([i.tokens for i in window], self.limits)
        remaining = window[0].enqueued_at + self.limits.max_wait_ms / 1000.0 - time.monotonic()
        if not (full or remaining <= 0):
            return [], remaining
        batch = [window[i] for i in chosen]
        taken = set(map(id, batch))
        self._queue = deque(i for i in self._queue if id(i) not in taken)
        self._queued_tokens -= sum(i.tokens for i in batch)
        self._gauge()
        return batch, 0.0

    def _live(self, batch: list[_Item], expired: Callable[[asyncio.Future], None] | None = None) -> list[_Item]:
        """The sequences of a batch just taken whose caller still waits: the others are dropped,
        those past their deadline answered with :class:`DeadlineExceeded` (by ``expired``; default
        at once, on the event loop)."""
        expired = expired or (lambda future: _settle(future, exc=DeadlineExceeded("deadline passed while queued")))
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.done():
                continue  # the caller left
            if item.deadline is not None and item.deadline <= now:
                expired(item.future)
                continue
            live.append(item)
        return live

    def take_on_thread(self) -> list[_Item]:
        """(Holding the cores' lock, on an inference thread; :meth:`CoreSlots.take_next`.) The next
        batch whose callers still wait, when one is ready and this batcher is open, counted in
        flight; else []. Callers past their deadline are answered on the event loop."""
        def expired(future: asyncio.Future) -> None:
            self._loop.call_soon_threadsafe(_settle, future, None, DeadlineExceeded("deadline passed while queued"))

        while self._queue and self._thread_takes:
            batch, _ = self._ready_batch()
            if not batch:
                return []
            live = self._live(batch, expired)
            if live:
                self._inflight += 1
                return live
        return []

    def _launch(self, batch: list[_Item]) -> None:
        """Start ``batch`` (taken from the queue, one core slot held) on an inference thread; on
        every core when it is the only work there is (:meth:`CoreSlots.hold_all`)."""
        started = time.monotonic()
        self._slots.running += 1
        self._observe_batch([i.tokens for i in batch], [started - i.enqueued_at for i in batch])
        extra = None if self._queue else self._slots.hold_all(len({id(i.caller) for i in batch}))
        infer = self._infer if extra is None else self._infer_alone
        try:
            self._executor.submit(self._work, self, batch, infer, 1 + (extra or 0), started)
        except BaseException as exc:  # the executor is shut down: settle the batch, free its cores
            self._batch_done(batch, None, exc, 0.0, 1 + (extra or 0), False)
            if not isinstance(exc, Exception):
                raise

    def _work(self, batcher: "DynamicBatcher", batch: list[_Item], infer: InferFn, slots: int,
              started: float) -> None:
        """Inference thread of this batcher: run ``batch`` of ``batcher`` (this one, or another model
        on the same cores), then, while it holds one slot and every core is busy, the next batch
        the cores hand out (:meth:`CoreSlots.take_next`) on the same thread. Each batch's outcome
        is settled on the event loop (:meth:`_batch_done`) before the next one is chosen; a slot
        kept for nothing is given back there too. Nothing here raises."""
        loop = self._loop
        while True:
            results, error = None, None
            try:
                results = infer([i.payload for i in batch])
            except BaseException as exc:
                error = exc
            keep = slots == 1  # a batch on every core gives them all back; one core may go on
            loop.call_soon_threadsafe(batcher._batch_done, batch, results, error, time.monotonic() - started,
                                      slots, keep)
            following = None
            if keep and self._thread_takes:
                try:
                    following = self._slots.take_next(batcher)
                except Exception:
                    log.exception("choosing the next batch on an inference thread failed")
            if following is None:
                if keep:
                    loop.call_soon_threadsafe(self._slots.batch_ended, 1)
                return
            batcher, batch = following
            infer, started = batcher._infer, time.monotonic()
            try:
                batcher._observe_batch([i.tokens for i in batch], [started - i.enqueued_at for i in batch])
            except Exception:  # metrics only: the batch runs whatever happens to them
                log.exception("batch metrics failed on model %s", batcher.name)

    def _batch_done(self, batch: list[_Item], results: list | None, error: BaseException | None,
                    elapsed_s: float, slots: int, kept: bool) -> None:
        """On the event loop: settle every sequence of a batch that ran for ``elapsed_s`` and ended
        (results, or the error for all of them); ``kept``: its thread still holds its one slot (see
        :meth:`_work`), else the ``slots`` it held are given back."""
        ok = False
        try:
            if error is not None:
                raise error
            for item, result in zip(batch, self._checked(results, len(batch))):
                _settle(item.future, result=result)
            ok = True
        except BaseException as exc:  # settle every future, whatever happened
            log.error("batch of %d failed on model %s", len(batch), self.name, exc_info=exc)
            failure = _as_inference_error(exc)
            for item in batch:
                _settle(item.future, exc=failure)
        finally:
            with self._slots.lock:
                self._inflight -= 1
            self._batch_ended.set()
            self._finished(elapsed_s, sum(i.tokens for i in batch), slots, ok, release=not kept)

    def _observe_batch(self, tokens: list[int], waits_s: list[float]) -> None:
        """Batch metrics of a starting batch: ``tokens`` ``[batch]`` per sequence, ``waits_s`` each
        sequence's time queued (0 for a batch that skipped the queue)."""
        if not self._metrics:
            return
        m, name = self._metrics, self.name
        padded = max(tokens) * len(tokens)
        m.batch_size.labels(model=name).observe(len(tokens))
        m.batch_tokens.labels(model=name).observe(padded)
        m.padding_ratio.labels(model=name).observe(1.0 - sum(tokens) / padded)
        wait = m.queue_wait.labels(model=name)
        for waited_s in waits_s:
            wait.observe(waited_s)

    def _retry_after_s(self) -> int:
        if self._s_per_token <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_tokens * self._s_per_token))))

    def _gauge(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.labels(model=self.name).set(len(self._queue))
            self._metrics.queue_tokens.labels(model=self.name).set(self._queued_tokens)


def _as_inference_error(exc: BaseException) -> InferenceError:
    """What callers of a failed batch get: the error itself when it is an InferenceError."""
    return exc if isinstance(exc, InferenceError) else InferenceError(f"inference failed: {type(exc).__name__}")


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
