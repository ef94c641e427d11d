"""The HTTP side of the clients: headers (User-Agent, API key, deadline), timeouts, and retries.

A request is retried on 429 and 503 and on a failed or broken connection, with exponential backoff and
jitter; when the service says `Retry-After`, the client waits that long instead (up to `max_wait_s`).
Every other error status is raised at once. The decisions live in `Attempts`, which both transports
share: only sending and sleeping differ between the sync and the async one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import platform
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from rnnserve_client._version import __version__
from rnnserve_client.errors import TransportError, api_error

logger = logging.getLogger(__name__)

USER_AGENT = f"rnnserve-client/{__version__} httpx/{httpx.__version__} Python/{platform.python_version()}"
RETRY_STATUSES = frozenset({429, 503})
# Failures where the request may not have reached the service, or its answer was lost: safe to send
# again, since every call of this API computes the same answer for the same input.
RETRY_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `retries` is the number of attempts after the first; the n-th
    retry waits `backoff_s · 2^(n-1)` seconds with jitter (half to all of it), or the service's
    `Retry-After`; no single wait is longer than `max_wait_s`."""

    retries: int = 3
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries is {self.retries!r}: pass a whole number ≥ 0 (0: never retry)")
        if not self.backoff_s >= 0 or not self.max_wait_s >= 0:
            raise ValueError(
                f"backoff_s is {self.backoff_s!r} and max_wait_s {self.max_wait_s!r}: pass seconds ≥ 0"
            )

    def wait_s(self, retry: int, retry_after_s: float | None) -> float:
        """How long to wait before retry number `retry` (1 for the first)."""
        if retry_after_s is not None:
            return min(retry_after_s * random.uniform(1.0, 1.1), self.max_wait_s)
        delay = min(self.backoff_s * 2 ** (retry - 1), self.max_wait_s)
        return random.uniform(delay / 2, delay)


def retry_after_s(response: httpx.Response) -> float | None:
    """The response's `Retry-After` in seconds (it may be a number or an HTTP date), if it has one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Attempts:
    """One call's attempts: after each, whether to give up (raise), to return, or to wait and retry."""

    def __init__(self, policy: RetryPolicy, method: str, url: str) -> None:
        self.policy = policy
        self.what = f"{method} {url}"
        self.count = 0

    def after_response(self, response: httpx.Response, accepted: Collection[int]) -> float | None:
        """None when `response` is the answer; else the seconds to wait before trying again. Raises the
        service's error when it is not worth retrying, or when no retry is left."""
        self.count += 1
        status = response.status_code
        if 200 <= status < 300 or status in accepted:
            return None
        advised_s = retry_after_s(response)
        if status not in RETRY_STATUSES or self.count > self.policy.retries:
            raise api_error(
                status, response.content, response.headers.get("x-request-id"), advised_s, self.count
            )
        wait_s = self.policy.wait_s(self.count, advised_s)
        logger.info(
            "%s answered %d; retrying in %.2f s (attempt %d of %d)",
            self.what, status, wait_s, self.count + 1, self.policy.retries + 1,
            extra={"status_code": status, "retry_after_s": advised_s, "wait_s": wait_s},
        )  # fmt: skip
        return wait_s

    def after_error(self, error: httpx.TransportError) -> float:
        """The seconds to wait before trying again after `error`; raises `TransportError` when the
        error is not worth retrying, or when no retry is left."""
        self.count += 1
        if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
            raise TransportError(
                f"{self.what}: no answer in time ({type(error).__name__}); pass a longer `timeout` "
                "to the client",
                self.count,
            ) from error
        if not isinstance(error, RETRY_ERRORS) or self.count > self.policy.retries:
            attempts = f"{self.count} attempt{'s' if self.count > 1 else ''}"
            raise TransportError(
                f"{self.what}: failed after {attempts} ({type(error).__name__}: {error}); "
                "check that the service runs at that address",
                self.count,
            ) from error
        wait_s = self.policy.wait_s(self.count, None)
        logger.info(
            "%s failed (%s: %s); retrying in %.2f s (attempt %d of %d)",
            self.what, type(error).__name__, error, wait_s, self.count + 1, self.policy.retries + 1,
            extra={"error": type(error).__name__, "wait_s": wait_s},
        )  # fmt: skip
        return wait_s


def checked_base_url(base_url: str) -> str:
    if not str(base_url).startswith(("http://", "https://")):
        raise ValueError(f"base_url is {base_url!r}: pass the service's URL, e.g. http://127.0.0.1:8000")
    return str(base_url)


def base_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def http_timeout(timeout: float) -> httpx.Timeout:
    if not timeout > 0:
        raise ValueError(f"timeout is {timeout!r}: pass the seconds to wait for an answer, e.g. 30")
    return httpx.Timeout(timeout)


class SyncTransport:
    """Sends requests with retries over one `httpx.Client` (one connection pool)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        policy: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.http = httpx.Client(
            base_url=checked_base_url(base_url),
            headers=base_headers(api_key),
            timeout=http_timeout(timeout),
            transport=transport,
        )

    def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        accepted: Collection[int] = (),
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response to `method path`: a 2xx, or a status in `accepted`; else raises."""
        attempts = Attempts(self.policy, method, f"{self.http.base_url}".rstrip("/") + path)
        while True:
            try:
                response = self.http.request(method, path, content=content, headers=headers, params=params)
            except httpx.TransportError as error:
                time.sleep(attempts.after_error(error))
                continue
            wait_s = attempts.after_response(response, accepted)
            if wait_s is None:
                return response
            time.sleep(wait_s)

    def close(self) -> None:
        self.http.close()


class AsyncTransport:
    """Sends requests with retries over one `httpx.AsyncClient`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        policy: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.http = httpx.AsyncClient(
            base_url=checked_base_url(base_url),
            headers=base_headers(api_key),
            timeout=http_timeout(timeout),
            transport=transport,
        )

    async def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        accepted: Collection[int] = (),
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response to `method path`: a 2xx, or a status in `accepted`; else raises."""
        attempts = Attempts(self.policy, method, f"{self.http.base_url}".rstrip("/") + path)
        while True:
            try:
                response = await self.http.request(
                    method, path, content=content, headers=headers, params=params
                )
            except httpx.TransportError as error:
                await asyncio.sleep(attempts.after_error(error))
                continue
            wait_s = attempts.after_response(response, accepted)
            if wait_s is None:
                return response
            await asyncio.sleep(wait_s)

    async def aclose(self) -> None:
        await self.http.aclose()
