"""The service's failures and the one place that maps each to an HTTP status code.

Every error answer has the same shape: `{"detail": "<what was wrong and how to fix it>"}`, plus
`"errors": [{"loc": ..., "msg": ...}]` when the body failed validation in several places.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from service.responses import JSONBytesResponse

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure with a status code and a message meant for the client."""

    status_code: ClassVar[int] = 500
    headers: dict[str, str] = {}  # noqa: RUF012  # read-only here; a subclass or instance may set its own

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class InvalidInput(ServiceError):
    """The request is well-formed HTTP, but its content cannot be served as it is."""

    status_code = 422

    @classmethod
    def listing(cls, errors: list[dict[str, str]]) -> InvalidInput:
        """One error for several problems, each `{"loc": ..., "msg": ...}`: all of them in the message."""
        return cls("; ".join(f"{e['loc']}: {e['msg']}" for e in errors), errors)


class Unauthorized(ServiceError):
    """No API key, or a wrong one."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012


class Forbidden(ServiceError):
    """A valid key that may not do this: the repository calls need an admin key."""

    status_code = 403


class NotFound(ServiceError):
    """The request names a model or version that this service does not serve."""

    status_code = 404


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Overloaded(ServiceError):
    """The model's queue is full: the client should retry after `retry_after_s` seconds."""

    status_code = 429

    def __init__(
        self, message: str, errors: list[dict[str, Any]] | None = None, retry_after_s: int = 1
    ) -> None:
        super().__init__(message, errors)
        self.headers = {"Retry-After": str(retry_after_s)}


class MethodNotAllowed(ServiceError):
    status_code = 405
    headers = {"Allow": "POST"}  # noqa: RUF012


class ShuttingDown(ServiceError):
    status_code = 503


class ModelNotReady(ServiceError):
    status_code = 503


class QueueTimeout(ServiceError):
    """An input waited in the queue longer than `queue_timeout_s`."""

    status_code = 504


class InferenceFailed(ServiceError):
    """The model itself failed on a batch: a fault of the service, not of the request."""

    status_code = 500


class ChangeIncomplete(ServiceError):
    """A repository change made by some processes of the service and not by others."""

    status_code = 500


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; nobody reads the response."""


# nginx's code for "client closed request": it shows in logs and metrics, never on the wire.
CLIENT_CLOSED_REQUEST = 499


def error_response(status_code: int, message: str, **extra: Any) -> JSONBytesResponse:
    return JSONBytesResponse({"detail": message, **extra}, status_code=status_code)


def error_content(exc: ServiceError) -> dict[str, Any]:
    """The body of the answer to `exc` (its status code and headers are on the class); logs 5xx."""
    if exc.status_code >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message)
    return {"detail": exc.message, "errors": exc.errors} if exc.errors else {"detail": exc.message}


def in_protocol(request: Request) -> bool:
    """Whether the request is one of the V2 protocol's, whose clients read errors as {"error": ...}
    and bad input as 400."""
    return request.url.path.startswith("/v2/")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if in_protocol(request):
        content = error_content(exc)  # logs 5xx
        status = 400 if isinstance(exc, InvalidInput) else exc.status_code
        response = JSONBytesResponse({"error": content["detail"]}, status_code=status)
    else:
        response = JSONBytesResponse(error_content(exc), status_code=exc.status_code)
    response.headers.update(exc.headers)
    return response


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    listing = InvalidInput.listing(
        [{"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()]
    )
    if in_protocol(request):
        return JSONBytesResponse({"error": listing.message}, status_code=400)
    return error_response(422, listing.message, errors=listing.errors)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ClientDisconnected, _client_disconnected)
    app.add_exception_handler(RequestValidationError, _request_validation)
