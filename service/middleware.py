"""ASGI middleware: request ids, request logs and metrics, and the request body limit."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.drain import Drain
from service.errors import PayloadTooLarge
from service.headers import header
from service.logs import RequestLog, request_id
from service.metrics import ServiceMetrics

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")  # as ASGI headers are given
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """Gives each request an id (the client's X-Request-ID when it is sane, else a new one), returns it
    as a header, makes it part of every log record, and logs and counts the request when it ends."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, drain: Drain, request_log: RequestLog) -> None:
        self.app = app
        self.metrics = metrics
        self.drain = drain
        self.request_log = request_log
        # New ids are this process's random prefix and a counter: unique, and cheaper than a uuid4.
        self._id_prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)
        self._counted: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._timed: dict[tuple[str, str], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        rid = given if given and _SAFE_REQUEST_ID.fullmatch(given) else self._new_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID_NAME, rid.encode("latin-1"))]
                if self.drain.draining:  # the service stops soon: clients should reconnect elsewhere
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # Route templates, not raw paths, keep the metrics' label values few.
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            self._count(path, method, str(status))
            self._time(path, method, elapsed)
            self.request_log.add(method, scope["path"], rid, status, elapsed)
            request_id.reset(token)

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._counter):016x}"

    def _count(self, route: str, method: str, status: str) -> None:
        """Count a request; the labelled counters are looked up once, not on every request."""
        key = (route, method, status)
        if key not in self._counted:
            self._counted[key] = self.metrics.requests.labels(*key).inc
        self._counted[key]()

    def _time(self, route: str, method: str, seconds: float) -> None:
        key = (route, method)
        if key not in self._timed:
            self._timed[key] = self.metrics.latency.labels(*key).observe
        self._timed[key](seconds)


class BodyLimitMiddleware:
    """Refuses request bodies over `max_body_bytes` (413), by their Content-Length or as they stream.

    The error is raised where the app reads the body, so the app's error handler answers it.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        declared_too_large = declared.isdigit() and int(declared) > self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise self._too_large(int(declared))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large(received)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body has {size:,} bytes or more; the limit is {self.max_body_bytes:,} "
            "(RNNSERVE_MAX_BODY_BYTES): send fewer inputs per request"
        )
