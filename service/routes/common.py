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
import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import (
    ClientDisconnected,
    InvalidInput,
    MethodNotAllowed,
    ServiceError,
    ShuttingDown,
    error_content,
)
from service.headers import header
from service.lifecycle.leases import RequestScope
from service.registry import Registry
from service.tasks.base import Locate

T = TypeVar("T")
JSON_HEADERS = [(b"content-type", b"application/json")]


class DirectRoute(ABC):
    """One POST route answered on ASGI directly. Subclasses turn a request into a JSON-able answer."""

    path: ClassVar[str]
    """The route's path; with `pattern`, its OpenAPI form (`/v2/models/{model_name}/infer`)."""
    pattern: ClassVar[re.Pattern[str] | None] = None
    """For a path with parameters: their named groups go to `scope["path_params"]`."""
    also_documented: ClassVar[dict[str, dict[str, Any]]] = {}
    """More OpenAPI paths that the pattern matches, each with its operation."""
    openapi: ClassVar[dict[str, Any]]
    """The OpenAPI operation object of the route."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        """The answer's content; raises `ServiceError` for anything the client must change."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with RequestScope():  # the models it is given serve it to its end, even if swapped out
                content = await self.answer(scope, receive, scope["state"]["registry"])
        except ServiceError as exc:
            await self.refuse(send, exc)
            return
        except ClientDisconnected:
            # Nobody reads it; the status shows in the logs and metrics.
            await send_json(send, 499, {"detail": "the client closed the request"})
            return
        except asyncio.CancelledError:
            # The server's shutdown timeout ran out with this request unanswered: say so, then stop.
            await self.refuse(
                send, ShuttingDown("the service shut down before this request was answered: retry")
            )
            raise
        await self.respond(send, content)

    async def respond(self, send: Send, content: Any) -> None:
        """Send the answer: JSON, unless a protocol says otherwise."""
        await send_json(send, 200, content)

    async def refuse(self, send: Send, error: ServiceError) -> None:
        """Send the error answer, in the service's error shape unless a protocol says otherwise."""
        await send_json(send, error.status_code, error_content(error), error.headers.items())


class DirectRoutes:
    """ASGI middleware: requests for a `DirectRoute` go to it, everything else to the app."""

    def __init__(self, app: ASGIApp, routes: Sequence[DirectRoute]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes if route.pattern is None}
        self.patterned = [route for route in routes if route.pattern is not None]

    def find(self, path: str, scope: Scope) -> DirectRoute | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        for candidate in self.patterned:
            assert candidate.pattern is not None
            match = candidate.pattern.fullmatch(path)
            if match:
                scope["path_params"] = match.groupdict()
                return candidate
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.find(scope["path"], scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # for the request metrics, as the framework's routes do
        if scope["method"] != "POST":
            await route.refuse(send, MethodNotAllowed(f"{scope['method']} is not allowed here: send a POST"))
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


NOTICE_LEAVING_AFTER_S = 0.05
"""A request starts watching for its client to leave once it has waited this long for its answer."""


async def unless_disconnected(
    receive: Receive, work: Awaitable[T], after_s: float = NOTICE_LEAVING_AFTER_S
) -> T:
    """Await `work` (the body must have been read), but cancel it, and so its queued inputs, if the
    client goes away first.

    The watch starts only once `work` has run `after_s`: most answers come sooner, and a watching task
    on every request cost about 15 % of the event loop's CPU per request at concurrency 64. A client
    that leaves has its inputs computed only if a batch takes them before the watch notices."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task(loop)  # given the loop: one getpid() system call less on Python 3.11
    assert current is not None
    waits = Waits.of(loop)
    wait = waits.add(current, receive, loop.time() + after_s)
    try:
        return await work
    except asyncio.CancelledError:
        if not wait.gone:
            raise
        current.uncancel()
        raise ClientDisconnected() from None
    finally:
        waits.remove(wait)


class Wait:
    """A request waiting for its answer: its task, how to hear from its client, and when to start."""

    __slots__ = ("answered", "due", "gone", "receive", "task", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive, due: float) -> None:
        self.task, self.receive, self.due = task, receive, due
        self.answered = self.gone = False
        self.watcher: asyncio.Task[None] | None = None


class Waits:
    """The waiting requests of one event loop. One timer, due at the earliest start among those not yet
    watched, starts their watches: a timer of its own per request cost about 2.5 µs of CPU each."""

    def __init__(self) -> None:
        # No reference to the loop: it is the key of this object in a weak dictionary.
        self.waiting: set[Wait] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = math.inf

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> Waits:
        """The loop's waiting requests."""
        waits = _waits.get(loop)
        if waits is None:
            waits = _waits[loop] = Waits()
        return waits

    def add(self, task: asyncio.Task[Any], receive: Receive, due: float) -> Wait:
        wait = Wait(task, receive, due)
        self.waiting.add(wait)
        if due < self.timer_due:
            self._start_at(due)
        return wait

    def remove(self, wait: Wait) -> None:
        wait.answered = True
        self.waiting.discard(wait)
        if wait.watcher is not None:
            wait.watcher.cancel()
        if not self.waiting and self.timer is not None:  # nothing to watch: nor a timer holding the loop
            self.timer.cancel()
            self.timer, self.timer_due = None, math.inf

    def _start_at(self, due: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_due = asyncio.get_running_loop().call_at(due, self._start_due), due

    def _start_due(self) -> None:
        """Watch every request whose time has come; set the timer for the next."""
        self.timer, self.timer_due = None, math.inf
        loop = asyncio.get_running_loop()
        now, next_due = loop.time(), math.inf
        for wait in self.waiting:
            if wait.watcher is not None:
                continue
            if wait.due <= now:
                wait.watcher = loop.create_task(self._watch(wait))
            else:
                next_due = min(next_due, wait.due)
        if next_due < math.inf:
            self._start_at(next_due)

    @staticmethod
    async def _watch(wait: Wait) -> None:
        while (await wait.receive())["type"] != "http.disconnect":
            pass
        if not wait.answered:
            wait.gone = True
            wait.task.cancel()


_waits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waits] = weakref.WeakKeyDictionary()


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


def rest_place(many: bool) -> Locate:
    """How REST names a problem's place: `inputs[2].series` in a body with `inputs`, else `series`."""
    if many:
        return lambda p: p.field if p.item is None else f"inputs[{p.item}].{p.field}"
    return lambda p: p.field


def chosen_model(scope: Scope, named: str | None) -> str | None:
    """The model a request names: `"model"` in its JSON body, or `?model=` (for any body); None for the
    task's default."""
    query_string = scope.get("query_string", b"")
    if not query_string:
        return named
    query = parse_qs(query_string.decode("latin-1")).get("model", [])
    queried = query[-1] if query else None
    if named is not None and queried is not None and named != queried:
        raise InvalidInput(f"model: the body names {named!r} and the query {queried!r}; name one model")
    return named if named is not None else queried


def check_count(count: int, limit: int) -> None:
    if count > limit:
        raise InvalidInput(
            f"inputs: has {count} entries; at most {limit} per request (RNNSERVE_MAX_INPUTS_PER_REQUEST): "
            "split them over several requests"
        )
