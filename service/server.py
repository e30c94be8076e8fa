"""Process entry point: logging, then uvicorn serving :func:`service.api.create_app`.

One process per container: ONNX Runtime parallelises inside each batch (intra-op threads) and
the batcher's worker threads overlap batches, so Prometheus' default single-process registry is
exact. Scale out with more replicas (see deploy/).
"""

from __future__ import annotations

import logging
import os
import signal

import uvicorn

from service.api import create_app
from service.settings import Settings, unknown_variables


class _QuietQuantizationLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietQuantizationLogs())


def _drained(signum, _frame) -> None:
    logging.getLogger(__name__).info("signal %d: in-flight requests drained, exiting", signum)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn then stops accepting, finishes in-flight requests
    (up to ``shutdown_grace_s``) and runs the app's shutdown. It re-raises the signal afterwards; the handler
    installed here turns that into a normal return, so a drained shutdown exits with status 0."""
    configure_logging(settings.log_level)
    for name in unknown_variables(dict(os.environ)):
        logging.getLogger(__name__).warning("%s is not a Presso setting and is ignored (see README, Configuration)",
                                            name)
    signal.signal(signal.SIGTERM, _drained)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=settings.shutdown_grace_s, access_log=False)
