"""Transport layer: the FastAPI application.

``POST /ner`` and ``POST /classify`` validate input, tokenize, and hand texts to the model's
:class:`service.batching.DynamicBatcher`; health, readiness, model listing and Prometheus metrics
sit beside them. Every error is a JSON :class:`service.schemas.ErrorBody` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import BatchLimits, BatcherClosed, DeadlineExceeded, DynamicBatcher, InferenceError, Overloaded
from service.metrics import Metrics
from service.registry import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, LoadedModel, load_models
from service.runtime import onnxruntime_distribution, select_providers
from service.schemas import (ClassifyBatchResponse, ClassifyResponse, ErrorBody, InferenceRequest,
                             NerBatchResponse, NerResponse)
from service.settings import Settings

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 2000  # requests up to this size are tokenized on the event loop
ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 404, 413, 422, 429, 500, 503, 504)}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.field, self.headers = status, error, message, field, headers


def error_response(status: int, error: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


class State:
    """What the app holds between startup and shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self.ready = False


def create_app(settings: Settings, models: dict[str, LoadedModel] | None = None) -> FastAPI:
    """Build the app. ``models`` (already loaded) skips loading from ``settings.models_dir`` (tests)."""
    state = State(settings, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if models is None:
            providers = select_providers(onnxruntime_distribution())
            state.models = await asyncio.to_thread(load_models, settings.models_dir, providers,
                                                   settings.intra_op_threads, settings.ner_window_stride_tokens,
                                                   settings.intra_op_spinning, settings.all_cores_when_idle)
        else:
            state.models = models
        for name, model in state.models.items():
            state.metrics.register_model(name)
            batcher = DynamicBatcher(name, model.infer, BatchLimits.from_settings(settings), cost=_tokens,
                                     workers=settings.inference_workers(), metrics=state.metrics,
                                     infer_alone=_alone(model) if settings.all_cores_when_idle else None)
            batcher.start()
            state.batchers[name] = batcher
            if settings.warmup:  # both sessions, outside the batcher: metrics start at zero
                items = model.tokenize(["Presso warms up in Paris."])[0]
                await asyncio.to_thread(model.infer, items)
                await asyncio.to_thread(model.infer, items, alone=True)
        state.ready = True
        state.metrics.ready.set(1)
        log.info("ready: %s", {n: m.task for n, m in state.models.items()})
        try:
            yield
        finally:
            state.ready = False
            state.metrics.ready.set(0)
            await asyncio.gather(*(b.stop() for b in state.batchers.values()))

    app = FastAPI(title="Presso", version="0.1.0", lifespan=lifespan,
                  description="Compressed transformer inference: NER and text classification.")
    app.state.presso = state
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(JsonByDefault)

    def pick_model(task: str, requested: str | None) -> LoadedModel:
        if not state.ready:
            raise ApiError(503, "not_ready", "models are loading or the service is shutting down")
        if requested is not None:
            model = state.models.get(requested)
            if model is None:
                raise ApiError(404, "unknown_model", f"no model named {requested!r}; loaded: {sorted(state.models)}",
                               "body.model")
            if model.task != task:
                raise ApiError(422, "wrong_task", f"model {requested!r} is {model.task}, this endpoint needs {task}",
                               "body.model")
            return model
        candidates = sorted(n for n, m in state.models.items() if m.task == task)
        if len(candidates) != 1:
            message = (f"no {task} model is loaded" if not candidates
                       else f"several {task} models are loaded, choose one with 'model': {candidates}")
            raise ApiError(404 if not candidates else 422, "model_required", message, "body.model")
        return state.models[candidates[0]]

    def check_limits(texts: list[str], single: bool) -> None:
        if len(texts) > settings.max_texts_per_request:
            raise ApiError(413, "too_many_texts", f"{len(texts)} texts, at most {settings.max_texts_per_request} "
                           "per request", "body.texts")
        for i, text in enumerate(texts):
            field = "body.text" if single else f"body.texts.{i}"
            if len(text) > settings.max_text_chars:
                raise ApiError(413, "text_too_long", f"text has {len(text)} characters, at most "
                               f"{settings.max_text_chars}", field)
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:  # a lone surrogate, e.g. JSON "\ud800"
                    raise ApiError(422, "invalid_text", f"text is not valid Unicode: {exc.reason} at "
                                   f"character {exc.start}", field)

    def check_long_texts(model: LoadedModel, sequences: list[list], single: bool) -> None:
        if model.task != SEQUENCE_CLASSIFICATION or settings.classify_long_text != "reject":
            return
        for i, (item,) in enumerate(sequences):
            if item.encoded.truncated:
                raise ApiError(422, "too_many_tokens", f"text is longer than the model's {model.encoder.max_seq_len} "
                               "tokens and this service refuses to truncate", "body.text" if single
                               else f"body.texts.{i}")

    async def run(task: str, body: InferenceRequest, request: Request) -> tuple[LoadedModel, list[dict]]:
        deadline = time.monotonic() + (body.timeout_ms or settings.request_timeout_ms) / 1000.0
        model = pick_model(task, body.model)
        texts = body.all_texts()
        single = body.text is not None
        check_limits(texts, single)
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            sequences = model.tokenize(texts)  # tens of microseconds: cheaper than a thread hop
        else:
            sequences = await asyncio.to_thread(model.tokenize, texts)  # keep the event loop free
        check_long_texts(model, sequences, single)
        flat = [item for windows in sequences for item in windows]
        tokens = sum(item.tokens for item in flat)
        if tokens > settings.max_queued_tokens:  # could never be admitted, or would lock others out
            raise ApiError(413, "too_many_tokens", f"request has {tokens} tokens, at most "
                           f"{settings.max_queued_tokens} (PRESSO_MAX_QUEUED_TOKENS) per request",
                           "body.text" if single else "body.texts")
        try:
            partials = await unless_disconnected(request, state.batchers[model.name].submit(flat, deadline))
        except Overloaded as exc:
            state.metrics.rejected.labels(model=model.name).inc()
            raise ApiError(429, "overloaded", str(exc), headers={"Retry-After": str(exc.retry_after_s)})
        except DeadlineExceeded as exc:
            state.metrics.timed_out.labels(model=model.name).inc()
            raise ApiError(504, "deadline_exceeded", f"{exc} (timeout_ms "
                           f"{body.timeout_ms or settings.request_timeout_ms:g})", "body.timeout_ms")
        except BatcherClosed as exc:
            raise ApiError(503, "shutting_down", str(exc))
        except ClientDisconnected:
            raise ApiError(499, "client_disconnected", "the client closed the connection; its texts were dropped")
        except InferenceError as exc:
            raise ApiError(500, "inference_failed", str(exc))
        results, at = [], 0
        for text, windows in zip(texts, sequences):
            results.append(model.assemble(text, partials[at: at + len(windows)]))
            at += len(windows)
        return model, results

    async def answer(task: str, body: InferenceRequest, request: Request) -> JSONResponse:
        """One text: the result's fields beside ``model``; several: ``results`` in input order."""
        inflight = state.metrics.inflight.labels(endpoint=request.url.path)
        inflight.inc()  # from a parsed body on: a stalled upload is not being served
        try:
            model, results = await run(task, body, request)
        finally:
            inflight.dec()
        # Built from validated parts: returned as is, without a second validation pass.
        if body.text is not None:
            return JSONResponse({"model": model.name, **results[0]})
        return JSONResponse({"model": model.name, "results": results})

    @app.post("/ner", response_model=NerResponse | NerBatchResponse, responses=ERROR_RESPONSES,
              summary="Named entities with character offsets")
    async def ner(body: InferenceRequest, request: Request):
        return await answer(TOKEN_CLASSIFICATION, body, request)

    @app.post("/classify", response_model=ClassifyResponse | ClassifyBatchResponse, responses=ERROR_RESPONSES,
              summary="Label and per-label probabilities")
    async def classify(body: InferenceRequest, request: Request):
        return await answer(SEQUENCE_CLASSIFICATION, body, request)

    @app.get("/health/live", summary="Liveness: the process answers")
    async def live():
        return {"status": "alive"}

    @app.get("/health/ready", summary="Readiness: every model loaded and warmed up",
             responses={503: {"model": ErrorBody}})
    async def ready():
        if not state.ready:
            return error_response(503, "not_ready", "models are loading or the service is shutting down")
        return {"status": "ready", "models": sorted(state.models)}

    @app.get("/models", summary="Each loaded model's manifest")
    async def list_models():
        return {"models": [m.manifest for m in state.models.values()]}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class ClientDisconnected(Exception):
    """The HTTP client went away while its texts were queued."""


async def unless_disconnected(request: Request, work):
    """Await ``work`` (a coroutine), cancelling it if the client disconnects first (its queued
    sequences are then dropped before inference, as TEI drops requests whose client left).

    Raises:
        ClientDisconnected: the client closed the connection before ``work`` finished.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left, or this handler itself was cancelled
    if task in done:
        return task.result()
    raise ClientDisconnected()


def _alone(model: LoadedModel):
    return lambda items: model.infer(items, alone=True)


def _tokens(item) -> int:
    return item.tokens


class JsonByDefault:
    """ASGI middleware: a POST without a JSON content type (``curl -d`` sends a form type, some
    clients text/plain) is read as JSON, so the answer is about the body's content rather than its declared type."""

    LENIENT = (b"", b"application/x-www-form-urlencoded", b"text/plain")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            declared = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
            if declared in self.LENIENT:
                scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "invalid"}
        field = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("type") == "too_long" and tuple(first.get("loc", ()))[:2] == ("body", "texts"):
            return error_response(413, "too_many_texts", f"more than {app.state.presso.settings.max_texts_per_request} texts per request",
                                  "body.texts")
        if first.get("type") == "json_invalid":
            return error_response(400, "invalid_json", f"request body is not valid JSON: {first.get('msg')}", "body")
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5])
        return error_response(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
            return error_response(400, "invalid_json", f"request body is not valid UTF-8 JSON ({exc.detail})", "body")
        return error_response(exc.status_code, "http_error", str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}")


class MetricsMiddleware:
    """ASGI middleware: request count and latency by endpoint and status. Pure ASGI (no per-request task group, unlike ``BaseHTTPMiddleware``)."""

    KNOWN = {"/ner", "/classify", "/health/live", "/health/ready", "/models", "/metrics"}

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in self.KNOWN else "other"
        status = 500

        async def send_and_observe(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_latency.labels(endpoint=endpoint, status=str(status)).observe(
                time.perf_counter() - started)
