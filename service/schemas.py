"""Request and response bodies of the HTTP API (also the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator


# Validation stops at the first item past this, so a body of millions of non-strings costs
# microseconds instead of one error object per item (the configurable, lower limit is
# PRESSO_MAX_TEXTS_PER_REQUEST; both answer 413).
MAX_TEXTS_HARD_LIMIT = 10_000


class InferenceRequest(BaseModel):
    """Exactly one of ``text`` or ``texts``; not both ``model`` and ``route``."""

    # The schema says what validation enforces: exactly one of the two, neither null; model and
    # route exclude each other (422 route_and_model).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["text"]},
                                                                           {"required": ["texts"]}],
                                                                 "not": {"required": ["model", "route"]}})

    text: StrictStr = Field(None, description="one text")
    texts: list[StrictStr] = Field(None, description="several texts, answered in order", min_length=1,
                                   max_length=MAX_TEXTS_HARD_LIMIT)
    model: StrictStr = Field(None, description="model name; default: the task's default route, else the only "
                             "model of the task")
    route: StrictStr = Field(None, description="route name (a confidence cascade or a top-k expert router of the "
                             "routes file; not together with 'model'): each result says which model answered")
    timeout_ms: StrictInt = Field(None, ge=1, le=600_000, description="deadline in milliseconds from arrival; "
                                  "504 when it passes (default: the service's request_timeout_ms)")

    @field_validator("timeout_ms", mode="before")
    @classmethod
    def integral_number(cls, value):
        """JSON Schema's ``integer`` includes ``33.0``; strings stay refused."""
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @model_validator(mode="before")
    @classmethod
    def first_unknown_field_only(cls, data):
        """Keep one unknown key for the error (``body.<key>``): a body of 500k unknown keys would
        otherwise build 500k error objects on the event loop."""
        if isinstance(data, dict) and not data.keys() <= cls.model_fields.keys():
            first = next(k for k in data if k not in cls.model_fields)
            return {k: v for k, v in data.items() if k in cls.model_fields or k == first}
        return data

    @model_validator(mode="after")
    def one_of_text_texts(self) -> "InferenceRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable error kind")
    message: str
    field: str | None = Field(None, description="the request field at fault, e.g. body.texts.3")
