"""Domain errors of the data plane: what went wrong, in the service's own terms.

Each error names its ``kind`` (the machine-readable ``error`` of the response body) and the
request ``field`` at fault in transport-neutral form (``texts.3``, ``model``, ``timeout_ms``;
``location`` says whether it is in the request body or the path). A transport maps the class to
its own status (:data:`presso.service.httputil.HTTP_STATUS`); nothing here knows about HTTP.
"""

from __future__ import annotations


class ServiceError(Exception):
    kind = "error"
    location = "body"

    def __init__(self, message: str, field: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.retry_after_s = message, field, retry_after_s


class NotReady(ServiceError):
    """Models are loading, or the service is draining."""
    kind = "not_ready"


class ShuttingDown(ServiceError):
    kind = "shutting_down"


class ModelReplaced(ServiceError):
    """The model was reloaded repeatedly while the request was being prepared."""
    kind = "model_reloading"


class UnknownModel(ServiceError):
    kind = "unknown_model"


class UnknownRoute(ServiceError):
    kind = "unknown_route"


class RouteAndModel(ServiceError):
    """A request named both a model and a route."""
    kind = "route_and_model"


class PathUnknownModel(UnknownModel):
    location = "path"


class NoModelForTask(ServiceError):
    """No loaded model serves the endpoint's task."""
    kind = "no_model_for_task"


class ModelRequired(ServiceError):
    """Several models serve the task and the request did not choose one."""
    kind = "model_required"


class WrongTask(ServiceError):
    kind = "wrong_task"


class TooManyTexts(ServiceError):
    kind = "too_many_texts"


class TextTooLong(ServiceError):
    kind = "text_too_long"


class InvalidText(ServiceError):
    kind = "invalid_text"


class TooManyTokens(ServiceError):
    """Over the request's token bound (too much to queue)."""
    kind = "too_many_tokens"


class LongerThanModel(ServiceError):
    """A text is longer than the model's ``max_seq_len`` and the service refuses to truncate."""
    kind = "too_many_tokens"


class Expired(ServiceError):
    """The request's deadline passed."""
    kind = "deadline_exceeded"


class Overloaded(ServiceError):
    """The queue is over its bound; ``retry_after_s`` says when to try again."""
    kind = "overloaded"


class ClientGone(ServiceError):
    kind = "client_disconnected"


class InferenceFailed(ServiceError):
    kind = "inference_failed"


class InvalidArtifact(ServiceError):
    """A reload found a bad artifact; the old version keeps serving."""
    kind = "invalid_artifact"
    location = "path"


class ReloadInProgress(ServiceError):
    kind = "reload_in_progress"
    location = "path"
