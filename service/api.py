"""Transport layer: the FastAPI application (REST).

It maps requests to the data plane (:class:`presso.service.dataplane.DataPlane`) and its domain
errors (:mod:`presso.service.errors`) to HTTP; one route per task plug-in
(:data:`presso.service.tasks.TASKS`), plus health, readiness, model listing, reload and Prometheus
metrics. Every error is a JSON :class:`presso.service.schemas.ErrorBody` with a 4xx/5xx status.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from presso.service import errors, oip
from presso.service.dataplane import DataPlane
from presso.service.inference import InferenceEndpoints
from presso.service.metrics import Metrics, exposition
from presso.service.middleware import ApiKeys, BodyLimit, DrainGate, JsonByDefault, MetricsMiddleware
from presso.service.registry import LoadedModel
from presso.service.responses import error_response, service_error_response, validation_error_response
from presso.service.routing.routes import Routing
from presso.service.schemas import ErrorBody, InferenceRequest
from presso.service.settings import Settings
from presso.service.tasks import TASKS, TaskPlugin

log = logging.getLogger(__name__)

VERSION = "0.1.0"
ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 415, 422, 429, 500, 503, 504)}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.field, self.headers = status, error, message, field, headers


def create_app(settings: Settings, models: dict[str, LoadedModel] | None = None) -> FastAPI:
    """Build the app. ``models`` (already loaded) skips loading from ``settings.models_dir`` (tests)."""
    plane = DataPlane(settings, Metrics(), models)
    routing = Routing.from_settings(plane)  # the file's shape now; its models once they are loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        metrics_server = None
        if settings.metrics_port and settings.workers == 1:  # several workers: the arbiter serves it
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(settings.metrics_port, settings.host, plane.metrics.registry)
        await plane.start()
        routing.check()
        grpc_server = None
        if settings.grpc_port:
            from presso.service.oip import grpc as oip_grpc

            grpc_server = await oip_grpc.start(plane, VERSION, settings.host, settings.grpc_port)
        try:
            yield
        finally:
            if grpc_server is not None:  # after HTTP drained; draining already refuses new gRPC calls
                await grpc_server.stop(settings.shutdown_grace_s)
            await plane.stop()
            if metrics_server is not None:
                metrics_server.shutdown()

    app = FastAPI(title="Presso", version=VERSION, lifespan=lifespan,
                  description="Compressed transformer inference: NER and text classification.")
    app.state.presso = plane
    app.state.routing = routing
    document_limits(app, settings)
    install_error_handlers(app)
    # Starlette wraps the last added outermost: metrics + request id -> drain -> keys -> body -> JSON
    # -> the inference request path (POST on the task routes), then FastAPI's router for the rest.
    app.add_middleware(InferenceEndpoints, plane=plane, routing=routing)
    app.add_middleware(JsonByDefault)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_read_timeout_s)
    app.add_middleware(ApiKeys, settings=settings)
    app.add_middleware(DrainGate, lifecycle=plane)
    app.add_middleware(MetricsMiddleware, metrics=plane.metrics)

    endpoints = InferenceEndpoints(app.router, plane, routing)
    for plugin in TASKS.values():
        add_task_route(app, plugin, endpoints)
    oip.install(app, plane, VERSION)

    @app.api_route("/health/live", methods=["GET", "HEAD"], summary="Liveness: the process answers")
    async def live():
        return {"status": "alive"}

    @app.api_route("/health/ready", methods=["GET", "HEAD"], summary="Readiness: every model loaded and warmed up",
                   responses={503: {"model": ErrorBody}})
    async def ready():
        if not plane.serving:
            return error_response(503, "not_ready", "models are loading or the service is shutting down")
        return {"status": "ready", "models": sorted(plane.models)}

    @app.get("/models", summary="Each loaded model: active version, load time and manifest")
    async def list_models():
        return {"models": plane.describe()}

    @app.post("/models/{name}/reload", summary="Swap in the artifact now in the model's directory",
              responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
                         503: {"model": ErrorBody}})
    async def reload_model(name: str):
        """Load and validate the artifact (manifest, sha256 checksums, reference outputs, name and
        task unchanged), warm it up, then swap it in: new requests use it at once, requests already
        queued finish on the old version. A bad artifact is refused (422) and the old version keeps
        serving."""
        return await plane.reload(name)

    @app.get("/metrics", summary="Prometheus metrics (404 when PRESSO_METRICS_PORT moves them)",
             response_class=Response)
    async def metrics():
        if settings.metrics_port:
            raise ApiError(404, "not_found", f"metrics are served on port {settings.metrics_port}")
        return Response(exposition(plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def add_task_route(app: FastAPI, plugin: TaskPlugin, endpoints: InferenceEndpoints) -> None:
    """``POST plugin.route``: an :class:`InferenceRequest` answered with the plug-in's schema.

    Requests are answered by :class:`InferenceEndpoints` ahead of the router; this declaration
    documents the route (OpenAPI) and answers the same way if it is reached."""

    async def endpoint(request: Request):
        return await endpoints.respond(plugin, request.scope, request.receive)

    endpoint.__name__ = plugin.route.strip("/").replace("/", "_") or "root"
    app.post(plugin.route, response_model=plugin.response_model, responses=ERROR_RESPONSES, summary=plugin.summary,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/InferenceRequest"}}}}})(endpoint)


def document_limits(app: FastAPI, settings: Settings) -> None:
    """Write this deployment's request limits (texts per request, characters per text) into the
    OpenAPI schema, so generated clients and schema-driven tests know them."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            schema["components"]["schemas"]["InferenceRequest"] = InferenceRequest.model_json_schema(
                ref_template="#/components/schemas/{model}")
            props = schema["components"]["schemas"]["InferenceRequest"]["properties"]
            props["texts"]["maxItems"] = settings.max_texts_per_request
            props["texts"]["items"]["maxLength"] = props["text"]["maxLength"] = settings.max_text_chars
        return app.openapi_schema

    app.openapi = openapi


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ServiceError)
    async def service_error(_request: Request, exc: errors.ServiceError):
        return service_error_response(exc)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return validation_error_response(exc.errors(), app.state.presso.settings.max_texts_per_request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
            return error_response(400, "invalid_json", f"request body is not valid UTF-8 JSON ({exc.detail})", "body")
        return error_response(exc.status_code, "http_error", str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        # Starlette re-raises after this answer and the server then closes the connection: say so
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}", headers={"Connection": "close"})
