"""Process entry point: logging, then uvicorn serving :func:`service.api.create_app`.

One process per container: ONNX Runtime parallelises inside each batch (intra-op threads) and
the batcher's worker threads overlap batches, so Prometheus' default single-process registry is
exact. Scale out with more replicas (see deploy/).
"""

from __future__ import annotations

import logging

import uvicorn

from service.api import create_app
from service.settings import Settings


class _QuietQuantizationLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietQuantizationLogs())


def run(settings: Settings) -> None:
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=30, access_log=False)
