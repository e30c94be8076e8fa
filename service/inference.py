"""The REST inference request path (``POST /ner``, ``POST /classify``) as plain ASGI.

Profiled under load (py-spy, 128 clients, 2 cores), the event loop was the bottleneck and half of
its time per request went to framework layers around the data plane: FastAPI's routing,
dependency solving, body parsing and validation, exception middleware. This handler does what
the request needs and no more: the body (already read and bounded by
:class:`~presso.service.middleware.BodyLimit`), ``json.loads`` (the same parser FastAPI uses, so
the same bodies are accepted), :class:`~presso.service.schemas.InferenceRequest` validation, the
data plane, and an ``orjson`` response. Errors are the same JSON bodies as everywhere else
(:mod:`presso.service.responses`).

It sits inside the service's middleware (metrics, drain, API keys, body limit) and in front of
FastAPI's router; the FastAPI routes stay declared (OpenAPI schema, other methods get 405) and
call the same :meth:`InferenceEndpoints.respond`.
"""

from __future__ import annotations

import json
import logging

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from presso.service import errors
from presso.service.dataplane import DataPlane
from presso.service.httputil import wait_for_disconnect
from presso.service.middleware import header
from presso.service.responses import error_response, service_error_response, validation_error_response
from presso.service.routing.routes import Routing
from presso.service.schemas import InferenceRequest
from presso.service.tasks import TASKS, TaskPlugin

log = logging.getLogger(__name__)

JSON_TYPES = (b"application/json",)


class InferenceEndpoints:
    """ASGI middleware answering ``POST`` on every task plug-in's route; everything else goes on to ``app``."""

    def __init__(self, app, plane: DataPlane, routing: Routing | None = None) -> None:
        self.app, self.plane, self.routing = app, plane, routing or Routing(plane)
        self.routes: dict[str, TaskPlugin] = {p.route: p for p in TASKS.values()}

    async def __call__(self, scope, receive, send):
        plugin = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if plugin is None:
            return await self.app(scope, receive, send)
        response = await self.respond(plugin, scope, receive)
        if response is not None:
            await response(scope, receive, send)

    async def respond(self, plugin: TaskPlugin, scope, receive) -> Response | None:
        """The answer to one inference request; None when the client left before sending its body."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            return await self._answer(plugin, scope, receive, b"".join(chunks))
        except errors.ServiceError as exc:
            return service_error_response(exc)
        except Exception:
            log.exception("unhandled error")
            return error_response(500, "internal_error", "unexpected error while answering the request")

    async def _answer(self, plugin: TaskPlugin, scope, receive, raw: bytes) -> Response:
        declared = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if declared and declared not in JSON_TYPES and not declared.endswith(b"+json"):
            return error_response(415, "unsupported_media_type", f"content type {declared.decode('latin-1')[:100]!r}; "
                                  "send application/json", "header.content-type")
        max_texts = self.plane.settings.max_texts_per_request
        if not raw:
            return validation_error_response([{"loc": ("body",), "msg": "Field required", "type": "missing"}],
                                             max_texts)
        try:
            data = json.loads(raw.decode("utf-8-sig"))  # json.loads(bytes) would also take UTF-16 and UTF-32
        except UnicodeDecodeError as exc:
            return error_response(400, "invalid_json", f"request body is not valid UTF-8 JSON ({exc.reason})", "body")
        except ValueError as exc:  # json.JSONDecodeError
            return error_response(400, "invalid_json", f"request body is not valid JSON: {exc}"[:300], "body")
        except RecursionError:
            return error_response(400, "invalid_json", "request body is nested too deeply", "body")
        try:
            body = InferenceRequest.model_validate(data)
        except ValidationError as exc:
            problems = [{**p, "loc": ("body", *p.get("loc", ()))} for p in exc.errors(include_url=False)]
            return validation_error_response(problems, max_texts)
        single = body.text is not None
        route = self.routing.resolve(plugin.task, body.route, body.model)
        inflight = self.plane.metrics.inflight.labels(endpoint=plugin.route)
        inflight.inc()  # from a parsed body on: a stalled upload is not being served
        try:
            kwargs = {"single": single, "timeout_ms": body.timeout_ms,
                      "arrived_at": scope.get("state", {}).get("arrived_at"),
                      "disconnected": lambda: wait_for_disconnect(receive)}
            if route is None:
                model, results = await self.plane.infer(plugin.task, body.all_texts(), model=body.model, **kwargs)
                name = {"model": model.name}
            else:
                results = await self.routing.answer(route, body.all_texts(), **kwargs)
                name = {"route": route}
        finally:
            inflight.dec()
        # Built from validated parts: encoded as is, without a second validation pass.
        answer = {**name, **results[0]} if single else {**name, "results": results}
        return Response(orjson.dumps(answer), media_type="application/json")
