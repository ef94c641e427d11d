"""Access control: API keys, checked before anything else reads the request.

Keys come from `RNNSERVE_API_KEYS` (comma-separated) and `RNNSERVE_API_KEYS_FILE` (one per line, for a
mounted secret); none means the service is open. A key is accepted as `Authorization: Bearer <key>` or
`X-API-Key: <key>` and compared in constant time with every configured key. A missing or wrong key
gets 401 with `WWW-Authenticate: Bearer`. Health checks, the page at `/` and the API docs stay open,
`/metrics` too unless `RNNSERVE_METRICS_REQUIRE_KEY=true`. Keys never reach a log line.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import Unauthorized, error_content
from service.headers import header
from service.routes.common import send_json

OPEN_PATHS = frozenset(
    {
        "/",
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
    }
)
OPEN_PREFIXES = ("/docs/assets/", "/page/assets/")
REQUEST_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "X-Request-Timeout-Ms"]


def install_access_control(app: FastAPI, settings: Settings) -> None:
    """API keys, and CORS outside them (a browser's preflight request carries no key). An admin key is an
    API key too, when the service has API keys."""
    api_keys = settings.api_key_set()
    if api_keys:  # an open service has no layer for keys on its requests' way
        api_keys |= settings.admin_key_set()
        app.add_middleware(ApiKeyMiddleware, keys=api_keys, metrics_open=not settings.metrics_require_key)
    if settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list(), allow_methods=["GET", "POST"],
            allow_headers=REQUEST_HEADERS, expose_headers=["X-Request-ID", "Retry-After"],
        )  # fmt: skip


def presented_key(scope: Scope) -> str:
    """The key a request sends, as `Authorization: Bearer <key>` or `X-API-Key: <key>`; "" if none."""
    scheme, _, bearer = header(scope, b"authorization").partition(" ")
    return (bearer.strip() if scheme.lower() == "bearer" else "") or header(scope, b"x-api-key")


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: frozenset[str], metrics_open: bool) -> None:
        self.app = app
        self.keys = [key.encode() for key in sorted(keys)]
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.open_paths
            or scope["path"].startswith(OPEN_PREFIXES)
            or self._allowed(scope)
        ):
            await self.app(scope, receive, send)
            return
        given = bool(header(scope, b"authorization") or header(scope, b"x-api-key"))
        error = Unauthorized(
            "the API key is wrong: send a valid one as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            if given
            else "an API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
        # The V2 protocol's clients (tritonclient) read errors as {"error": ...}.
        body = {"error": error.message} if scope["path"].startswith("/v2/") else error_content(error)
        await send_json(send, error.status_code, body, error.headers.items())

    def _allowed(self, scope: Scope) -> bool:
        given = presented_key(scope)
        if not given:
            return False
        candidate = given.encode()
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]  # every key, always
        return any(matches)
