"""Scheduling layer: a dynamic batcher per model on asyncio, inference in worker threads.

Callers submit items; a collector task groups queued items into a batch that closes at
``max_batch_size`` items or ``max_wait_ms`` after the batch's first item was enqueued (monotonic
clock, the deadline computed once from that arrival time, so time spent queued while every worker
was busy counts against it). Batches run in a thread pool so the event loop never blocks.

Guarantees, after MLServer's adaptive batcher (``mlserver/batching/adaptive.py``):
every submitted item's future is settled exactly once; an exception in inference fails every item
of that batch (and only that batch) and the batcher keeps serving; a full queue rejects at once
with :class:`Overloaded` instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

InferFn = Callable[[list[Any]], list[Any]]


class Overloaded(RuntimeError):
    """The queue is full; retry after ``retry_after_s``."""

    def __init__(self, queued: int, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"queue full ({queued} texts queued, limit {limit})")
        self.retry_after_s = retry_after_s


class BatcherClosed(RuntimeError):
    """The batcher is stopping or stopped and accepts no work."""


class InferenceError(RuntimeError):
    """Inference failed for the batch this item was in."""


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Groups items from concurrent callers into batches for ``infer``.

    Args:
        name: model name (metrics label, logs).
        infer: ``list[payload] -> list[result]`` of the same length and order; runs in a worker thread.
        max_batch_size: most items per batch.
        max_wait_ms: longest time a batch waits for more items after its first item arrived.
        max_queue_items: queued items beyond which :meth:`submit` raises :class:`Overloaded`.
        workers: batches that may run concurrently (threads).
        metrics: a :class:`service.metrics.Metrics` or None.
    """

    def __init__(self, name: str, infer: InferFn, max_batch_size: int, max_wait_ms: float,
                 max_queue_items: int, workers: int = 1, metrics=None) -> None:
        self.name = name
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_items = max_queue_items
        self._workers = workers
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{name}")
        self._collector: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect_forever(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop accepting work, finish running batches, fail whatever is still queued."""
        self._closed = True
        if self._collector:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            _settle(item.future, exc=BatcherClosed(f"model {self.name} is shutting down"))
        self._executor.shutdown(wait=True)

    # -- callers -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, payloads: Sequence[Any]) -> list[Any]:
        """Queue ``payloads`` as separate items and wait for all results, in order.

        Raises:
            Overloaded: the queue cannot take ``len(payloads)`` more items.
            BatcherClosed: the batcher is stopping.
            InferenceError: inference failed for a batch holding one of the items.
        """
        if self._closed:
            raise BatcherClosed(f"model {self.name} is shutting down")
        if self._queue.qsize() + len(payloads) > self.max_queue_items:
            raise Overloaded(self._queue.qsize(), self.max_queue_items)
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in payloads]
        for item in items:
            self._queue.put_nowait(item)
        self._gauge()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except BaseException:
            for item in items:  # caller gone or one item failed: the rest need not run
                item.future.cancel()
            raise

    # -- collector ---------------------------------------------------------------------------

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Item]:
        first = await self._queue.get()
        deadline = first.enqueued_at + self.max_wait_s
        batch = [first]
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        self._gauge()
        return [item for item in batch if not item.future.done()]  # drop callers that left

    async def _run(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        try:
            if self._metrics:
                self._metrics.batch_size.labels(model=self.name).observe(len(batch))
                wait = self._metrics.queue_wait.labels(model=self.name)
                for item in batch:
                    wait.observe(started - item.enqueued_at)
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self._infer, [i.payload for i in batch])
            if len(results) != len(batch):
                raise InferenceError(f"model {self.name} returned {len(results)} results for {len(batch)} inputs")
            for item, result in zip(batch, results):
                _settle(item.future, result=result)
        except BaseException as exc:  # settle every future, whatever happened
            log.exception("batch of %d failed on model %s", len(batch), self.name)
            error = exc if isinstance(exc, InferenceError) else InferenceError(f"inference failed: {type(exc).__name__}")
            for item in batch:
                _settle(item.future, exc=error)
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._metrics:
                self._metrics.inference_latency.labels(model=self.name).observe(time.monotonic() - started)
            self._slots.release()

    def _gauge(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.labels(model=self.name).set(self._queue.qsize())


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
