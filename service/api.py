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
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import BatchLimits, BatcherClosed, DeadlineExceeded, DynamicBatcher, InferenceError, Overloaded
from service.metrics import Metrics, exposition
from service.memory import release_memory
from service.middleware import ApiKeys, BodyLimit, DrainGate, JsonByDefault, MetricsMiddleware
from service.registry import (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, ArtifactError, LoadedModel,
                              TooManyTokens, load_models)
from service.runtime import RuntimeSetupError, onnxruntime_distribution, select_providers
from service.schemas import (ClassifyBatchResponse, ClassifyResponse, ErrorBody, InferenceRequest,
                             NerBatchResponse, NerResponse)
from service.settings import Settings, available_cores

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 2000  # requests up to this size are tokenized on the event loop
ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 429, 500, 503, 504)}


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
    """What the app holds between startup and shutdown. ``draining`` (set by the server on SIGTERM)
    turns readiness and new requests to 503; ``active`` counts requests being served."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self.ready = False
        self.draining = False
        self.active = 0
        self.last_request_at = 0.0

    def begin_drain(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)


def create_app(settings: Settings, models: dict[str, LoadedModel] | None = None) -> FastAPI:
    """Build the app. ``models`` (already loaded) skips loading from ``settings.models_dir`` (tests)."""
    state = State(settings, Metrics())

    async def start_serving(model: LoadedModel) -> DynamicBatcher:
        """A started batcher for ``model``, after warm-up (both sessions, outside the batcher, so
        metrics start at zero)."""
        if settings.warmup:
            items = model.tokenize(["Presso warms up in Paris."])[0]
            await asyncio.to_thread(model.infer, items)
            await asyncio.to_thread(model.infer, items, alone=True)
        state.metrics.register_model(model.name)
        batcher = DynamicBatcher(model.name, model.infer, BatchLimits.from_settings(settings), cost=_tokens,
                                 workers=settings.inference_workers(), metrics=state.metrics,
                                 infer_alone=_alone(model) if settings.all_cores_when_idle else None)
        batcher.start()
        return batcher

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        metrics_server = None
        if settings.metrics_port and settings.workers == 1:  # several workers: the arbiter serves it
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(settings.metrics_port, settings.host, state.metrics.registry)
        if models is None:
            state.models = await asyncio.to_thread(load_models, settings.models_dir, **model_options(settings))
        else:
            state.models = models
        for name, model in state.models.items():
            state.batchers[name] = await start_serving(model)
        state.ready = True
        state.metrics.ready.set(1)
        log.info("ready: %s", {n: m.task for n, m in state.models.items()})
        try:
            yield
        finally:
            state.ready = False
            state.metrics.ready.set(0)
            await asyncio.gather(*(b.stop() for b in state.batchers.values()))
            if metrics_server is not None:
                metrics_server.shutdown()

    app = FastAPI(title="Presso", version="0.1.0", lifespan=lifespan,
                  description="Compressed transformer inference: NER and text classification.")
    app.state.presso = state
    document_limits(app, settings)
    install_error_handlers(app)
    # Starlette wraps the last added outermost: metrics + request id -> drain -> keys -> body -> JSON.
    app.add_middleware(JsonByDefault)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_read_timeout_s)
    app.add_middleware(ApiKeys, settings=settings)
    app.add_middleware(DrainGate, lifecycle=state)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    large_requests = asyncio.Semaphore(available_cores())

    def pick_model(task: str, requested: str | None) -> LoadedModel:
        if not state.ready:
            raise ApiError(503, "not_ready", "models are loading or the service is shutting down")
        if requested is not None:
            model = state.models.get(requested)
            if model is None:
                raise ApiError(404, "unknown_model", f"no model named {shorten(requested)}; loaded: {sorted(state.models)}",
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
        arrived_at = getattr(request.state, "arrived_at", None) or time.monotonic()  # headers in, body not yet
        deadline = arrived_at + (body.timeout_ms or settings.request_timeout_ms) / 1000.0
        for _attempt in range(3):
            model = pick_model(task, body.model)
            batcher = state.batchers[model.name]  # the pair is swapped together on reload
            try:
                return model, await run_on(model, batcher, body, request, deadline)
            except BatcherClosed:
                if state.draining or state.batchers.get(model.name) is batcher:
                    raise ApiError(503, "shutting_down", f"model {model.name} is shutting down")
                # the model was reloaded while this request was being tokenized: run it on the new one
        raise ApiError(503, "model_reloading", f"model {model.name} was replaced repeatedly; retry")

    async def run_on(model: LoadedModel, batcher: DynamicBatcher, body: InferenceRequest, request: Request,
                     deadline: float) -> list[dict]:
        texts = body.all_texts()
        single = body.text is not None
        check_limits(texts, single)

        def expired(where: str) -> ApiError:
            state.metrics.timed_out.labels(model=model.name).inc()
            return ApiError(504, "deadline_exceeded", f"deadline passed {where} (timeout_ms "
                            f"{body.timeout_ms or settings.request_timeout_ms:g}, counted from arrival)",
                            "body.timeout_ms")

        if time.monotonic() >= deadline:
            raise expired("before tokenization (the body took that long to arrive)")
        try:  # a request over the queue's token bound could never be admitted, or would lock others out
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                sequences = model.tokenize(texts, settings.max_queued_tokens)  # cheaper than a thread hop
            else:  # off the event loop; one large request per core at a time bounds tokenization memory
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await large_requests.acquire()  # a grant that loses the race to the timeout is given back
                except TimeoutError:
                    raise expired("waiting to be tokenized behind other large requests") from None
                try:
                    sequences = await asyncio.to_thread(model.tokenize, texts, settings.max_queued_tokens)
                finally:
                    large_requests.release()
        except TooManyTokens as exc:
            raise ApiError(413, "too_many_tokens", f"request has {exc}, at most {settings.max_queued_tokens} "
                           "(PRESSO_MAX_QUEUED_TOKENS) per request", "body.text" if single else "body.texts")
        if time.monotonic() >= deadline:
            raise expired("during tokenization")
        check_long_texts(model, sequences, single)
        flat = [item for windows in sequences for item in windows]
        try:
            partials = await unless_disconnected(request, batcher.submit(flat, deadline))
        except Overloaded as exc:
            state.metrics.rejected.labels(model=model.name).inc()
            raise ApiError(429, "overloaded", str(exc), headers={"Retry-After": str(exc.retry_after_s)})
        except DeadlineExceeded as exc:
            state.metrics.timed_out.labels(model=model.name).inc()
            raise ApiError(504, "deadline_exceeded", f"{exc} (timeout_ms "
                           f"{body.timeout_ms or settings.request_timeout_ms:g})", "body.timeout_ms")
        except ClientDisconnected:
            raise ApiError(499, "client_disconnected", "the client closed the connection; its texts were dropped")
        except InferenceError as exc:
            raise ApiError(500, "inference_failed", str(exc))
        results, at = [], 0
        for text, windows in zip(texts, sequences):
            results.append(model.assemble(text, partials[at: at + len(windows)]))
            at += len(windows)
        return results

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
        if not state.ready or state.draining:
            return error_response(503, "not_ready", "models are loading or the service is shutting down")
        return {"status": "ready", "models": sorted(state.models)}

    @app.get("/models", summary="Each loaded model: active version, load time and manifest")
    async def list_models():
        return {"models": [m.describe() for m in state.models.values()]}

    reloading: dict[str, asyncio.Lock] = {}

    @app.post("/models/{name}/reload", summary="Swap in the artifact now in the model's directory",
              responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody}})
    async def reload_model(name: str):
        """Load and validate the artifact (manifest, sha256 checksum, name and task unchanged), warm
        it up, then swap it in: new requests use it at once, requests already queued finish on the
        old version. A bad artifact is refused (422) and the old version keeps serving."""
        if not state.ready or state.draining:
            raise ApiError(503, "not_ready", "models are loading or the service is shutting down")
        old = state.models.get(name)
        if old is None:
            raise ApiError(404, "unknown_model", f"no model named {shorten(name)}; loaded: {sorted(state.models)}",
                           "path.name")
        lock = reloading.setdefault(name, asyncio.Lock())
        if lock.locked():
            raise ApiError(409, "reload_in_progress", f"model {name!r} is already being reloaded", "path.name")
        async with lock:
            try:
                new = await asyncio.to_thread(LoadedModel, old.path, **model_options(settings))
                if (new.name, new.task) != (old.name, old.task):
                    raise ArtifactError(f"{old.path} now holds {new.name!r} ({new.task}), not {name!r} ({old.task})")
                batcher = await start_serving(new)
            except Exception as exc:  # whatever is wrong with the new files, the old version keeps serving
                reason = str(exc) if isinstance(exc, (ArtifactError, RuntimeSetupError)) else f"{type(exc).__name__}: {exc}"
                log.warning("reload of %s refused: %s", name, reason)
                raise ApiError(422, "invalid_artifact", f"{reason[:500]}; still serving version {old.version}",
                               "path.name")
            previous = state.batchers[name]
            state.models[name], state.batchers[name] = new, batcher  # one step: no request sees a mix
            log.info("model %s: version %s replaced %s", name, new.version, old.version)
        await previous.stop(drain_s=settings.shutdown_grace_s)
        answer = {"model": name, "previous_version": old.version, "version": new.version}
        del old, previous
        await asyncio.to_thread(release_memory)
        return answer

    @app.get("/metrics", summary="Prometheus metrics (404 when PRESSO_METRICS_PORT moves them)",
             response_class=Response)
    async def metrics():
        if settings.metrics_port:
            raise ApiError(404, "not_found", f"metrics are served on port {settings.metrics_port}")
        return Response(exposition(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def shorten(value: str, limit: int = 100) -> str:
    """``repr`` of a client-supplied name, cut to ``limit`` characters (an error never echoes megabytes)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


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


def document_limits(app: FastAPI, settings: Settings) -> None:
    """Write this deployment's request limits (texts per request, characters per text) into the
    OpenAPI schema, so generated clients and schema-driven tests know them."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            props = schema["components"]["schemas"]["InferenceRequest"]["properties"]
            props["texts"]["maxItems"] = settings.max_texts_per_request
            props["texts"]["items"]["maxLength"] = props["text"]["maxLength"] = settings.max_text_chars
        return app.openapi_schema

    app.openapi = openapi


def model_options(settings: Settings) -> dict:
    """:class:`LoadedModel` keyword arguments from the settings (ONNX Runtime providers chosen here)."""
    return {"providers": select_providers(onnxruntime_distribution()), "intra_op_threads": settings.intra_op_threads,
            "stride_tokens": settings.ner_window_stride_tokens, "spinning": settings.intra_op_spinning,
            "alone_session": settings.all_cores_when_idle}


def _alone(model: LoadedModel):
    return lambda items: model.infer(items, alone=True)


def _tokens(item) -> int:
    return item.tokens


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
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))[:100]}: {e.get('msg')}" for e in errors[:5])
        field = field[:100]  # an unknown key can be any size; it is named, not echoed in full
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
