"""Scheduling layer: the cores that every model's batcher in one process shares (:class:`CoreSlots`).

At most ``workers`` batches run at once across all models (one per core with ``intra_op_threads=1``).
Without it each model's batcher would start its own ``workers`` batches, so a second busy model (a
cascade's next step, a router's experts, NER beside classification) oversubscribes the cores, and a
batcher that sees only its own queue would pick its all-cores session while another model's batches
run.

Slots are taken on the event loop (:meth:`CoreSlots.acquire`, first come, first served) and also
kept by an inference thread whose batch just ended, for the next batch, when every core is busy
(:meth:`CoreSlots.take_next`): that batch starts at once on the same thread, without the round trip
through the event loop and the wake-up of another thread (measured at 128 clients on 2 cores: about
2 ms + 2.4 ms per batch, during which the core sat idle). Which batch: the first batcher in line
for a core that has one ready, then the one whose batch just ended; a batcher served that way goes
to the back of the line, so models sharing the cores take turns. ``lock`` guards the line and,
for the batchers on these cores, their queues (threads take batches from them).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Protocol


class Batcher(Protocol):
    def take_on_thread(self) -> list[Any]:
        """(Holding :attr:`CoreSlots.lock`.) The next batch to start on an inference thread now,
        taken out of the queue and counted as in flight, or [] when none is ready."""


class CoreSlots:
    """Core slots shared by the batchers of one process (see the module docstring).

    A batch on the all-cores session holds every slot (:meth:`hold_all`): a batch started beside
    it would put more threads than cores to work, and ONNX Runtime's parallel operators then wait
    on whichever thread the OS parked. ``running`` counts batches running now; ``waiting`` counts
    batchers waiting for a core; ``callers`` counts submit calls not yet answered on any of the
    batchers. Every method but :meth:`take_next` runs on the event loop.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.running = 0
        self.callers = 0
        self.lock = threading.Lock()
        self._free = workers
        self._waiters: deque[tuple[asyncio.Future, Batcher | None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def free(self) -> int:
        """Slots no batch holds now."""
        return self._free

    async def acquire(self, owner: Batcher | None = None) -> None:
        """Take one slot, waiting in line (first come, first served) while none is free; ``owner``
        (the batcher that waits) lets a thread that keeps its core run that batcher's next batch.

        Raises:
            asyncio.CancelledError: the caller was cancelled while waiting; it holds no slot then
                (one granted at the same moment is handed to the next waiter).
        """
        with self.lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            entry = (asyncio.get_running_loop().create_future(), owner)
            self._waiters.append(entry)
        try:
            await entry[0]
        except asyncio.CancelledError:
            granted = entry[0].done() and not entry[0].cancelled()
            if not granted:
                with self.lock:
                    if entry in self._waiters:  # a release() may already have passed over it
                        self._waiters.remove(entry)
            else:
                self.release()  # granted, then cancelled before it ran: hand the slot on
            raise

    def release(self, slots: int = 1) -> None:
        """Give back ``slots`` slots; waiters still waiting get them in order."""
        with self.lock:
            self._free += slots
            while self._free and self._waiters:
                waiter, _ = self._waiters.popleft()
                if not waiter.done():
                    self._free -= 1
                    waiter.set_result(None)

    def batch_ended(self, slots: int) -> None:
        """A running batch that held ``slots`` slots ended: it no longer counts in ``running`` and
        its slots are given back (:meth:`release`)."""
        self.running -= 1
        self.release(slots)

    def idle(self) -> bool:
        """Nothing runs, nobody waits for a slot and no caller waits on these cores."""
        return not (self.running or self._waiters or self._free != self.workers or self.callers)

    def take_all(self) -> int | None:
        """When nothing runs, nobody waits and no caller is waiting on these cores, take every slot
        for one batch that runs at once (counted in ``running``); return how many, else None.
        Give them back with :meth:`release` and ``running -= 1``."""
        with self.lock:
            if not self.idle():
                return None
            taken, self._free = self._free, 0
        self.running += 1
        return taken

    def hold_all(self, callers_in_batch: int) -> int | None:
        """For a batch that holds one slot and is about to run: when it is the only batch running,
        every other slot is free, no batcher waits and every caller waiting on these cores has its
        sequences in this batch (``callers_in_batch``), take the other slots too and return how many
        (0 with one core; give them back with :meth:`release`); otherwise None (it runs beside
        others). A caller elsewhere (another model's queue, the next cascade step) means a batch
        will soon want a core: one core per batch then wastes less than every core on one small batch."""
        with self.lock:
            if (self.running > 1 or self._waiters or self._free != self.workers - 1
                    or self.callers > callers_in_batch):
                return None
            taken, self._free = self._free, 0
        return taken

    def take_next(self, last: Batcher) -> tuple[Batcher, list[Any]] | None:
        """On an inference thread whose one-slot batch of ``last`` just ended: while every slot is
        held (so the event loop could start nothing sooner), the next batch to run on this thread,
        keeping the slot, and its batcher; None gives the slot back through the event loop. The
        first batcher in line with a batch ready goes first (and to the back of the line), then
        ``last``; a waiter in line that is not a batcher gets the slot through the event loop."""
        with self.lock:
            if self._free:
                return None  # a core is idle: the event loop hands out batches (perhaps on every core)
            for k, entry in enumerate(self._waiters):
                waiter, owner = entry
                if waiter.done():
                    continue
                if owner is None:
                    return None
                batch = owner.take_on_thread()
                if batch:
                    del self._waiters[k]
                    self._waiters.append(entry)
                    return owner, batch
            batch = last.take_on_thread()
            return (last, batch) if batch else None
