"""ASGI middleware around the FastAPI app (pure ASGI: no per-request task group). Outermost first:

1. :class:`MetricsMiddleware`: request count and latency by endpoint and status, request id
   (``X-Request-ID`` in, or generated; echoed back), one access log line per request (method,
   path, status, duration; never the body).
2. :class:`DrainGate`: during shutdown new requests get 503; counts the requests it lets in, so the
   server can wait for them (see :mod:`presso.service.server`).
3. :class:`ApiKeys`: 401 on inference and model-management paths without a configured key.
4. :class:`BodyLimit`: 413 for bodies over the limit before they are read into memory (also
   chunked ones without Content-Length), 408 for uploads that stall.
5. :class:`JsonByDefault`: POST bodies without a JSON content type are read as JSON; encoded ones get 415.

Errors raised here are JSON :class:`presso.service.schemas.ErrorBody` objects, like the app's own.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid

from presso.service.logs import request_id
from presso.service.metrics import Metrics
from presso.service.tasks import ROUTES

access_log = logging.getLogger("presso.access")
log = logging.getLogger(__name__)
PROBES = ("/health/live", "/health/ready", "/metrics", "/v2/health/live", "/v2/health/ready")
# Paths with a name in them, and the metric ``endpoint`` label each is counted under.
TEMPLATES = (
    (re.compile(r"/models/[^/]+/reload"), "/models/{name}/reload"),
    (re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer"), "/v2/models/{name}/infer"),
    (re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/ready"), "/v2/models/{name}/ready"),
    (re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?"), "/v2/models/{name}"),
)
OIP_INFER_LABEL = "/v2/models/{name}/infer"


def endpoint_label(path: str, known: set[str]) -> str:
    """The metric ``endpoint`` label of ``path``: itself when known, its template, else ``other``
    (so unknown paths cannot grow the label set)."""
    if path in known:
        return path
    return next((label for pattern, label in TEMPLATES if pattern.fullmatch(path)), "other")


async def send_error(send, status: int, error: str, message: str, field: str | None = None,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with a JSON error body (``{"error", "message", "field"}``) and close the connection."""
    body = json.dumps({"error": error, "message": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class MetricsMiddleware:
    """Per request: count and latency by endpoint and status (a client that left before any
    response is counted as status 499, nginx's "client closed request"); the request id (the
    client's ``X-Request-ID`` when it is short printable ASCII, else a new UUID4), returned in
    ``X-Request-ID`` and attached to every log record; one access log line (method, path, status,
    duration; never the body; not for probes). A request cancelled by the server's shutdown before
    it answered gets a JSON 503."""

    KNOWN = {*ROUTES, "/health/live", "/health/ready", "/models", "/metrics", "/v2", "/v2/health/live",
             "/v2/health/ready"}

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        endpoint = endpoint_label(path, self.KNOWN)
        given = header(scope, b"x-request-id")
        rid = given.decode() if given and len(given) <= 128 and given.isascii() and given.decode().isprintable() \
            else uuid.uuid4().hex
        token = request_id.set(rid)
        status = "499"

        async def send_and_observe(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        except asyncio.CancelledError:  # the server stopped (shutdown grace over) before this finished
            if status == "499":
                try:
                    await send_error(send_and_observe, 503, "shutting_down", "the service stopped before this "
                                     "request finished; retry on another replica")
                except Exception:  # the connection is already gone
                    pass
            if status != "503":
                raise
            # answered: the request ends here, as shutdown wants, without uvicorn logging the
            # cancellation as an "Exception in ASGI application" traceback
        except BaseException:
            status = "500" if status == "499" else status
            raise
        finally:
            elapsed_s = time.perf_counter() - started
            self.metrics.requests.labels(endpoint=endpoint, status=status).inc()
            self.metrics.request_latency.labels(endpoint=endpoint, status=status).observe(elapsed_s)
            if access_log.isEnabledFor(logging.INFO) and path not in PROBES:
                access_log.info("%s %s %s", scope["method"], path, status, extra={
                    "method": scope["method"], "path": path, "status": int(status),
                    "duration_ms": round(elapsed_s * 1000, 2)})
            request_id.reset(token)


class DrainGate:
    """While ``lifecycle.draining``, answer every request but the probes with 503 ``shutting_down``;
    count the requests let in (``lifecycle.active``) so shutdown can wait for them, and note when
    the last request of any kind arrived (``lifecycle.last_request_at``, monotonic seconds)."""

    def __init__(self, app, lifecycle) -> None:
        self.app, self.lifecycle = app, lifecycle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        self.lifecycle.last_request_at = time.monotonic()
        scope.setdefault("state", {})["arrived_at"] = self.lifecycle.last_request_at  # deadlines count from here
        if self.lifecycle.draining:
            return await send_error(send, 503, "shutting_down", "the service is shutting down; retry on another "
                                    "replica", headers=[(b"retry-after", b"1")])
        self.lifecycle.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.active -= 1


class ApiKeys:
    """With keys configured, ``/ner``, ``/classify``, ``/models*`` and ``/v2/models/*`` need ``Authorization: Bearer
    <key>`` or ``X-API-Key: <key>``; otherwise 401 without detail. Every configured key is compared
    in constant time (``hmac.compare_digest``), whichever matches; keys are never logged.

    ``settings.api_key_list()`` is read again when the keys file's modification time changes, so a
    rotated Kubernetes Secret takes effect without a restart.
    """

    PROTECTED = (*ROUTES, "/models", "/v2/models")

    def __init__(self, app, settings) -> None:
        self.app, self.settings = app, settings
        # Configured = a keys variable or file is set: then an empty list refuses everyone (a
        # revoked or half-rotated Secret must not open the service).
        self.enabled = settings.api_keys is not None or settings.api_keys_file is not None
        self.keys = settings.api_key_list()
        self.stamp = self._stamp()
        if self.enabled and not self.keys:
            log.warning("API keys are configured but none is set: every protected request gets 401")

    def _stamp(self) -> int | None:
        path = self.settings.api_keys_file
        try:
            return path.stat().st_mtime_ns if path is not None else None
        except OSError:
            return None

    def current_keys(self) -> list[bytes]:
        stamp = self._stamp()
        if stamp != self.stamp:
            try:
                self.keys, self.stamp = self.settings.api_key_list(), stamp
                log.info("API keys reloaded from the keys file: %d keys", len(self.keys))
            except OSError as exc:  # mid-rotation: keep the keys we have
                log.warning("API keys file unreadable, keeping the previous keys: %s", type(exc).__name__)
        return self.keys

    def allowed(self, scope, keys: list[bytes]) -> bool:
        return self.matches(header(scope, b"authorization"), header(scope, b"x-api-key"), keys)

    @staticmethod
    def matches(authorization: bytes | None, api_key: bytes | None, keys: list[bytes]) -> bool:
        """Whether ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` offers one of ``keys``
        (also the gRPC transport's check, on its metadata)."""
        offered = [api_key, authorization[7:].strip()
                   if authorization and authorization[:7].lower() == b"bearer " else None]
        match = False
        for given in filter(None, offered):
            for key in keys:
                match |= hmac.compare_digest(key, given)
        return match

    async def __call__(self, scope, receive, send):
        if self.enabled and scope["type"] == "http" and scope["path"].startswith(self.PROTECTED):
            keys = self.current_keys() if self.settings.api_keys_file else self.keys
            if not self.allowed(scope, keys):
                return await send_error(send, 401, "unauthorized", "missing or invalid API key",
                                        headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class BodyLimit:
    """Read the request body before the app does, at most ``max_bytes`` and within ``timeout_s``.

    A ``Content-Length`` over the limit is refused before reading; a chunked body is refused as soon
    as its running total passes it (413 ``body_too_large``). A body that does not arrive within
    ``timeout_s`` gets 408 ``body_timeout``. At most ``BUFFERED_BODIES`` x ``max_bytes`` of bodies are
    held at once across requests (429 ``overloaded`` beyond), so memory stays bounded however many
    clients upload at the limit. The first ``SMALL_BODY_BYTES`` (at most ``max_bytes / 8``) of every
    body are not counted, so
    uploads stalled at the budget cannot lock out ordinary requests (a few KB each): those are
    bounded by the connection count instead. A client that disconnects gets no answer. The app then
    receives the whole body in one message, and later ``receive()`` calls (disconnect watching)
    go to the server.
    """

    METHODS = ("POST", "PUT", "PATCH")
    BUFFERED_BODIES = 4  # bodies of the largest size held at once, in all; beyond: 429
    SMALL_BODY_BYTES = 64 * 1024  # per body, never counted against that budget (at most max_bytes / 8)

    def __init__(self, app, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.small = min(self.SMALL_BODY_BYTES, max_bytes // 8)
        self.buffered = 0  # bytes of bodies being read or served, all requests together

    async def too_large(self, send, size: str) -> None:
        await send_error(send, 413, "body_too_large", f"request body is {size} bytes, at most {self.max_bytes} "
                         "(PRESSO_MAX_BODY_BYTES)", "body")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in self.METHODS:
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.too_large(send, declared.decode())
        chunks, size, counted = [], 0, 0
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > self.max_bytes:
                            return await self.too_large(send, f"more than {self.max_bytes}")
                        over = max(0, size - self.small) - counted  # only bytes past the allowance count
                        counted += over
                        self.buffered += over
                        if over and self.buffered > self.BUFFERED_BODIES * self.max_bytes:
                            return await send_error(send, 429, "overloaded", "too many large request bodies at "
                                                    "once; retry shortly", headers=[(b"retry-after", b"1")])
                        chunks.append(chunk)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                return await send_error(send, 408, "body_timeout", f"request body not received within "
                                        f"{self.timeout_s:g} s (PRESSO_BODY_READ_TIMEOUT_S)", "body")
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            chunks.clear()

            async def replay():
                return pending.pop() if pending else await receive()

            await self.app(scope, replay, send)
        finally:
            self.buffered -= counted  # held until the request is answered


class JsonByDefault:
    """A POST without a JSON content type (``curl -d`` sends a form type, some clients text/plain)
    is read as JSON, so the answer is about the body's content rather than its declared type. A POST
    with a ``Content-Encoding`` other than identity (gzip, br, ...) gets 415 on every endpoint: bodies
    are read as sent, so a compressed one would only fail later as invalid JSON."""

    LENIENT = (b"", b"application/x-www-form-urlencoded", b"text/plain")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            encoding = (header(scope, b"content-encoding") or b"identity").strip().lower()
            if encoding not in (b"identity", b""):
                return await send_error(send, 415, "unsupported_media_type", f"content encoding "
                                        f"{encoding.decode('latin-1')[:100]!r}; send the body uncompressed",
                                        "header.content-encoding")
            declared = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
            if declared in self.LENIENT:
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
