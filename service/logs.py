"""Logging: one JSON object per line (python-json-logger) or plain text, each record carrying the
id of the HTTP request it belongs to (``request_id``, from the ``X-Request-ID`` header or generated).

Request texts are never logged: the access log line holds method, path, status, duration and id.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Literal

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class _QuietQuantizationLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def configure_logging(level: str, fmt: Literal["json", "text"] = "text") -> None:
    """Root logger at ``level``; ``json``: fields ``time``, ``level``, ``logger``, ``message``,
    ``request_id`` and any ``extra`` passed by the caller."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    handler.addFilter(_RequestId())
    handler.addFilter(_QuietQuantizationLogs())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # one format for everything
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
