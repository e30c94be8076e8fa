"""What the HTTP transports share (REST in :mod:`presso.service.api`, the Open Inference Protocol
in :mod:`presso.service.oip`): the status of each data-plane error (:mod:`presso.service.errors`)
and waiting for a client to leave."""

from __future__ import annotations

from presso.service import errors

HTTP_STATUS: dict[type[errors.ServiceError], int] = {
    errors.NotReady: 503, errors.ShuttingDown: 503, errors.ModelReplaced: 503,
    errors.UnknownModel: 404, errors.NoModelForTask: 404, errors.ModelRequired: 422, errors.WrongTask: 422,
    errors.TooManyTexts: 413, errors.TextTooLong: 413, errors.TooManyTokens: 413, errors.InvalidText: 422,
    errors.LongerThanModel: 422, errors.Expired: 504, errors.Overloaded: 429, errors.ClientGone: 499,
    errors.InferenceFailed: 500, errors.InvalidArtifact: 422, errors.ReloadInProgress: 409,
    errors.UnknownRoute: 404, errors.RouteAndModel: 422,
}


def http_status(exc: errors.ServiceError) -> int:
    """The status of ``exc``'s class or its nearest listed base class; 500 if none is listed."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


async def wait_for_disconnect(receive) -> None:
    """Returns when the HTTP client has closed the connection (``receive``: the request's ASGI
    receive callable; the body has been read already, so the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
