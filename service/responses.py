"""JSON error responses of the REST transport (every error is an
:class:`presso.service.schemas.ErrorBody` with a 4xx/5xx status), shared by the FastAPI handlers
(:mod:`presso.service.api`) and the inference request path (:mod:`presso.service.inference`)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from presso.service import errors
from presso.service.httputil import http_status
from presso.service.schemas import ErrorBody


def error_response(status: int, error: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def service_error_response(exc: errors.ServiceError) -> JSONResponse:
    """A domain error as HTTP: its status, ``error`` kind, and the field under ``body.`` or ``path.``."""
    field = f"{exc.location}.{exc.field}" if exc.field else None
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return error_response(http_status(exc), exc.kind, exc.message, field, headers)


def validation_error_response(problems: list[dict], max_texts: int) -> JSONResponse:
    """A request body that does not validate (pydantic error dicts, ``loc`` starting with
    ``body``): 413 ``too_many_texts`` past the texts limit, 400 ``invalid_json`` for a body that is
    not JSON, else 422 ``invalid_request`` naming the first field at fault (cut to 100 characters:
    an unknown key can be any size)."""
    first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request", "type": "invalid"}
    field = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "too_long" and tuple(first.get("loc", ()))[:2] == ("body", "texts"):
        return error_response(413, "too_many_texts", f"more than {max_texts} texts per request", "body.texts")
    if first.get("type") == "json_invalid":
        return error_response(400, "invalid_json", f"request body is not valid JSON: {first.get('msg')}", "body")
    message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))[:100]}: {e.get('msg')}" for e in problems[:5])
    return error_response(422, "invalid_request", message, field[:100])
