"""What the client raises: one base class, and one class per kind of failure the caller handles.

RnnserveError
├── InputError               the input was refused before sending (wrong type, shape, file)
├── TransportError           the service could not be reached, or did not answer in time
└── ApiError                 the service answered with an error status; its message is the server's
    ├── AuthenticationError      401: no API key, or a wrong one
    ├── InvalidInputError        422 (and 413, 415): the input cannot be served as it is
    ├── OverloadedError          429: the model's queue is full (after the client's retries)
    ├── ServiceUnavailableError  503: the model is not ready, or the service is shutting down
    └── QueueTimeoutError        504: the input was still queued at its deadline, never computed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class RnnserveError(Exception):
    """Anything the client raises on purpose."""


class InputError(RnnserveError, ValueError):
    """An input the client cannot send as it is; the message says what to pass instead."""


class TransportError(RnnserveError):
    """No answer: the connection failed or broke, or the service did not answer within the timeout."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class ErrorItem:
    """One problem of a body that failed validation in several places: where, and what was wrong."""

    loc: str
    msg: str


class ApiError(RnnserveError):
    """The service answered with an error status.

    `message` is the server's own `detail` (what was wrong and how to fix it), `errors` its list of
    problems when it gave one (422), `body` the whole decoded answer (or its text when it was not JSON).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        body: Any = None,
        errors: list[ErrorItem] | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.body = body
        self.errors = errors or []
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.attempts = attempts


class AuthenticationError(ApiError):
    """401: the service wants an API key (`Client(api_key=...)`), or the one sent is wrong; 403: the key
    may not do this (loading and unloading models needs an admin key), or the service allows nobody to."""


class InvalidInputError(ApiError):
    """422, 413 or 415: the input cannot be served as it is; `message` and `errors` say what to fix."""


class OverloadedError(ApiError):
    """429: the model's queue was full on every attempt; `retry_after_s` is the server's last advice."""


class ServiceUnavailableError(ApiError):
    """503: the model is not ready (see `Client.health()`) or the service is shutting down."""


class QueueTimeoutError(ApiError):
    """504: the input waited in the queue past its deadline and was never computed."""


_ERROR_CLASSES: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    413: InvalidInputError,
    415: InvalidInputError,
    422: InvalidInputError,
    429: OverloadedError,
    503: ServiceUnavailableError,
    504: QueueTimeoutError,
}


def api_error(
    status_code: int,
    content: bytes,
    request_id: str | None = None,
    retry_after_s: float | None = None,
    attempts: int = 1,
) -> ApiError:
    """The exception for an error answer. The service answers `{"detail": ..., "errors": [...]}`, and
    `{"error": ...}` on the V2 protocol's routes; anything else (a proxy's HTML page, say) is carried as
    text."""
    body: Any
    try:
        body = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", errors="replace")
    if isinstance(body, dict) and isinstance(body.get("error"), str):  # the V2 protocol's shape
        message, errors = body["error"], []
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]
        errors = [
            ErrorItem(loc=str(item.get("loc", "")), msg=str(item.get("msg", "")))
            for item in body.get("errors") or []
            if isinstance(item, dict)
        ]
    else:
        text = body if isinstance(body, str) else json.dumps(body)
        message = text.strip()[:500] or "(empty answer)"
        errors = []
    error_class = _ERROR_CLASSES.get(status_code, ApiError)
    return error_class(status_code, message, body, errors, request_id, retry_after_s, attempts)
