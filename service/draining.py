"""uvicorn that drains before it stops listening.

On SIGTERM/SIGINT readiness and every new request answer 503 at once while the listener stays
open (a client is answered, not reset); when the requests already accepted have finished and no
request arrived for ``QUIET_S``, or ``shutdown_grace_s`` has passed, uvicorn stops accepting and
the app shuts down. A second signal stops at once. Used by the single-process server
(:mod:`presso.service.server`) and by each gunicorn worker (:mod:`presso.service.multiprocess`).
"""

from __future__ import annotations

import logging
import time

import uvicorn

log = logging.getLogger(__name__)
# The listener closes once no request is running and none arrived for QUIET_S (or at the grace
# deadline): a load balancer still sending gets 503s rather than resets until it has moved away.
QUIET_S = 0.5


class DrainingServer(uvicorn.Server):
    """uvicorn that drains before it stops listening (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, state, grace_s: float) -> None:
        super().__init__(config)
        self.state, self.grace_s = state, grace_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame) -> None:
        if self.drain_deadline is None:
            self._captured_signals.append(sig)
            self.drain_deadline = time.monotonic() + self.grace_s
            self.state.begin_drain()
            log.info("signal %d: draining %d accepted requests (at most %.0f s); new requests get 503",
                     sig, self.state.active, self.grace_s)
        else:
            super().handle_exit(sig, frame)  # second signal: stop now

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            now = time.monotonic()
            quiet = self.state.active == 0 and now - self.state.last_request_at >= QUIET_S
            if quiet or now >= self.drain_deadline:
                log.info("drained (%d requests still running); stopping", self.state.active)
                # uvicorn waits timeout_graceful_shutdown again for open connections: only what is left
                # of the grace (at least 1 s), then cancelled requests are answered 503 (MetricsMiddleware)
                self.config.timeout_graceful_shutdown = max(1.0, self.drain_deadline - now)
                self.should_exit = True
        return await super().on_tick(counter)
