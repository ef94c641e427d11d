"""The prediction routes' shared machinery: served on ASGI directly, ahead of FastAPI.

`POST /predict/digit` and `POST /forecast` carry nearly all the traffic, so they skip the framework's
routing, dependency injection and response classes: `DirectRoutes` hands them their requests, and a
`DirectRoute` reads the body, answers with orjson, and maps every `ServiceError` to its status code
through `service.errors`, like the rest of the app. Every other route stays a FastAPI route. Their
OpenAPI description is added to the app's schema, so `/docs` shows them like the others.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import ClientDisconnected, InvalidInput, ServiceError, ShuttingDown, error_content
from service.headers import header
from service.registry import Registry

T = TypeVar("T")
JSON_HEADERS = [(b"content-type", b"application/json")]


class DirectRoute(ABC):
    """One POST route answered on ASGI directly. Subclasses turn a request into a JSON-able answer."""

    path: ClassVar[str]
    openapi: ClassVar[dict[str, Any]]
    """The OpenAPI operation object of the route."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        """The answer's content; raises `ServiceError` for anything the client must change."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            content = await self.answer(scope, receive, scope["state"]["registry"])
        except ServiceError as exc:
            await send_json(send, exc.status_code, error_content(exc), exc.headers.items())
            return
        except ClientDisconnected:
            # Nobody reads it; the status shows in the logs and metrics.
            await send_json(send, 499, {"detail": "the client closed the request"})
            return
        except asyncio.CancelledError:
            # The server's shutdown timeout ran out with this request unanswered: say so, then stop.
            error = ShuttingDown("the service shut down before this request was answered: retry")
            await send_json(send, error.status_code, error_content(error))
            raise
        await send_json(send, 200, content)


class DirectRoutes:
    """ASGI middleware: requests for a `DirectRoute` go to it, everything else to the app."""

    def __init__(self, app: ASGIApp, routes: Sequence[DirectRoute]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # for the request metrics, as the framework's routes do
        if scope["method"] != "POST":
            await send_json(send, 405, {"detail": "Method Not Allowed"}, [("Allow", "POST")])
            return
        await route(scope, receive, send)


async def send_json(
    send: Send, status: int, content: Any, headers: Sequence[tuple[str, str]] | Any = ()
) -> None:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    raw_headers = [
        *JSON_HEADERS,
        (b"content-length", str(len(body)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` (the body must have been read), but cancel it, and so its queued inputs, if the
    client goes away first."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        current.uncancel()
        raise ClientDisconnected() from None
    finally:
        watcher.cancel()


def request_timeout_s(scope: Scope) -> float | None:
    """The deadline a client set with `X-Request-Timeout-Ms`, in seconds (the queue timeout caps it)."""
    given = header(scope, b"x-request-timeout-ms")
    if not given:
        return None
    try:
        milliseconds = float(given)
    except ValueError:
        milliseconds = math.nan
    if not (math.isfinite(milliseconds) and milliseconds > 0):
        raise InvalidInput(
            f"X-Request-Timeout-Ms: is {given[:40]!r}; send a positive number of milliseconds, e.g. 250"
        )
    return milliseconds / 1000


def check_count(count: int, limit: int) -> None:
    if count > limit:
        raise InvalidInput(
            f"inputs: has {count} entries; at most {limit} per request (RNNSERVE_MAX_INPUTS_PER_REQUEST): "
            "split them over several requests"
        )


def document(app: FastAPI, routes: Sequence[DirectRoute]) -> None:
    """Add the direct routes' operations to the app's OpenAPI schema (and so to /docs)."""
    framework_schema: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = framework_schema()
            for route in routes:
                schema["paths"][route.path] = {"post": route.openapi}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
