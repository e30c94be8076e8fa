"""Process entry point: logging, then uvicorn serving :func:`service.api.create_app`, with a
draining shutdown.

One process per container: ONNX Runtime parallelises inside each batch (intra-op threads) and
the batcher's worker threads overlap batches, so Prometheus' default single-process registry is
exact. Scale out with more replicas (see deploy/).

Shutdown on SIGTERM/SIGINT (:class:`DrainingServer`): readiness and every new request answer 503
at once while the listener stays open (a client is answered, not reset); when the requests
already accepted have finished and no request arrived for ``QUIET_S``, or ``shutdown_grace_s`` has
passed, uvicorn stops accepting and the app shuts down. A second signal stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import uvicorn

from service.logs import configure_logging
from service.protocol import protocol_class
from service.settings import Settings, unknown_variables

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


def _drained(signum, _frame) -> None:
    log.info("signal %d: in-flight requests drained, exiting", signum)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, drain, return (uvicorn re-raises the signal after shutdown; the
    handler installed here turns that into a normal return, so a drained shutdown exits 0)."""
    configure_logging(settings.log_level, settings.log_format)
    for name in unknown_variables(dict(os.environ)):
        log.warning("%s is not a Presso setting and is ignored (see README, Configuration)", name)
    if settings.workers > 1:  # before anything imports prometheus_client (it picks its mode at import)
        from service.multiprocess import run as run_workers

        return run_workers(settings)
    from service.api import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=settings.shutdown_grace_s, access_log=False, log_config=None,
                            http=protocol_class(settings.max_header_bytes, settings.header_read_timeout_s))
    server = DrainingServer(config, app.state.presso, settings.shutdown_grace_s)
    signal.signal(signal.SIGTERM, _drained)  # restored by uvicorn, then called with the captured signal
    signal.signal(signal.SIGINT, _drained)
    server.run()
