"""Open Inference Protocol transport (KServe v2 / Triton REST) over the same data plane as
``/ner`` and ``/classify``: same batchers, limits, deadlines, API keys (``/v2/models/...``) and
metrics. Bodies are built by :mod:`presso.service.oip.codec`; errors are the protocol's
``{"error": message}`` with the status of the data plane's error (400 for protocol errors).

Endpoints: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}[/versions/{version}]``, ``GET .../ready``, ``POST .../infer``.
"""

from __future__ import annotations

import functools
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from presso.service import errors
from presso.service.dataplane import DataPlane
from presso.service.httputil import http_status, wait_for_disconnect
from presso.service.middleware import OIP_INFER_LABEL
from presso.service.oip.codec import (HEADER_LENGTH, ProtocolError, check_outputs, element_name, model_metadata,
                                      output_tensors, parse_infer)
from presso.service.registry import LoadedModel

log = logging.getLogger(__name__)
SERVER_NAME = "presso"


def oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install(app: FastAPI, plane: DataPlane, version: str) -> None:
    """Add the protocol's routes to ``app`` (hidden from the REST OpenAPI schema)."""

    def find(name: str, model_version: str | None) -> LoadedModel:
        if not plane.ready:
            raise errors.NotReady("models are loading or the service is shutting down")
        model = plane.models.get(name)
        if model is None:
            raise errors.UnknownModel(f"no model named {name[:100]!r}; loaded: {sorted(plane.models)}")
        if model_version is not None and model_version != model.version:
            raise errors.UnknownModel(f"model {name!r} has version {model.version}, not {model_version[:100]!r}")
        return model

    def guarded(handler):
        @functools.wraps(handler)
        async def run(*args, **kwargs):
            try:
                return await handler(*args, **kwargs)
            except ProtocolError as exc:
                return oip_error(400, str(exc))
            except errors.ServiceError as exc:
                headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
                where = element_name(exc.field) if exc.location == "body" else None
                return oip_error(http_status(exc), f"{where}: {exc.message}" if where else exc.message, headers)
            except Exception:  # answered here: an exception escaping the app would close the connection
                log.exception("unhandled error")
                return oip_error(500, "unexpected error while answering the request")
        return run

    @app.get("/v2", include_in_schema=False)
    async def server_metadata():
        return {"name": SERVER_NAME, "version": version, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live", include_in_schema=False)
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", include_in_schema=False)
    async def ready():
        return JSONResponse({"ready": plane.serving}, status_code=200 if plane.serving else 400)

    @guarded
    async def metadata(name: str, model_version: str | None = None):
        model = find(name, model_version)
        return model_metadata(model.name, model.version, model.task, model.labels)

    @guarded
    async def model_ready(name: str, model_version: str | None = None):
        model = find(name, model_version)
        ok = plane.serving
        return JSONResponse({"name": model.name, "ready": ok}, status_code=200 if ok else 400)

    @guarded
    async def infer(name: str, request: Request, model_version: str | None = None):
        model = find(name, model_version)
        parsed = parse_infer(await request.body(), request.headers.get(HEADER_LENGTH),
                             plane.settings.max_texts_per_request)
        names = check_outputs(model.task, parsed.outputs)
        inflight = plane.metrics.inflight.labels(endpoint=OIP_INFER_LABEL)
        inflight.inc()
        try:
            loaded, results = await plane.infer(
                model.task, parsed.texts, model=model.name, timeout_ms=parsed.timeout_ms,
                arrived_at=getattr(request.state, "arrived_at", None) or time.monotonic(),
                disconnected=lambda: wait_for_disconnect(request.receive))
        finally:
            inflight.dec()
        body = {"model_name": loaded.name, "model_version": loaded.version,
                "outputs": output_tensors(loaded.task, results, loaded.labels, names)}
        if parsed.id is not None:
            body["id"] = parsed.id
        return JSONResponse(body)

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{model_version}"):
        app.get(prefix, include_in_schema=False)(metadata)
        app.get(prefix + "/ready", include_in_schema=False)(model_ready)
        app.post(prefix + "/infer", include_in_schema=False)(infer)

