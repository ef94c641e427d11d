"""The Python client's own rules, with no rnnserve behind it: retries against a tiny stdlib HTTP server
on 127.0.0.1 that gives scripted answers (429 and 503 with `Retry-After`, a 4xx that must not be
retried, a refused connection), inputs and settings refused before anything is sent, and the light
dependencies of the package."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from rnnserve_client import (
    ApiError,
    AsyncClient,
    Client,
    ForecastInput,
    InputError,
    ServiceUnavailableError,
    TransportError,
    __version__,
)
from serving import free_port

RAMP = [float(t) for t in range(16)]


Answer = tuple[int, dict[str, str], dict[str, Any]]
"""A scripted answer: status, headers, JSON body."""


@dataclass
class Scripted:
    """A stdlib HTTP server on 127.0.0.1 at `url` that gives the scripted answers in order (the last one
    repeats) and records each request: when it came, its path and its headers."""

    answers: list[tuple[int, dict[str, str], dict[str, Any]]]
    url: str = ""
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


FORECAST_ANSWER = {
    "forecast": [1.0, 2.0],
    "intervals": {"80": {"lower": [0.5, 1.5], "upper": [1.5, 2.5]}},
    "model": "sine_gru",
    "version": "1",
}


@contextmanager
def scripted_server(*answers: tuple[int, dict[str, str], dict[str, Any]]) -> Iterator[Scripted]:
    script = Scripted(list(answers))

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            script.bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            headers = {name.lower(): value for name, value in self.headers.items()}
            script.requests.append((time.monotonic(), self.path, headers))
            status, extra_headers, body = script.answers[min(len(script.requests), len(script.answers)) - 1]
            content = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**extra_headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int) -> None:
    refusal = (status, {"Retry-After": "1"}, {"detail": "busy: retry after 1 s"})
    with (
        scripted_server(refusal, (200, {}, FORECAST_ANSWER)) as script,
        Client(script.url, api_key="k1", request_timeout_ms=250, backoff_s=0.01) as client,
    ):
        forecast = client.forecast(RAMP, horizon=2)
    assert forecast.forecast == [1.0, 2.0] and forecast.interval(80).lower == [0.5, 1.5]
    (first, path, headers), (second, _, _) = script.requests
    print(f"\n{status} with Retry-After: 1; the client waited {second - first:.3f} s")
    assert second - first >= 1.0 - 0.05
    assert path == "/forecast" and headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer k1" and headers["x-request-timeout-ms"] == "250"
    assert headers["user-agent"].startswith(f"rnnserve-client/{__version__} ")


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_other_4xx_are_never_retried(status: int) -> None:
    refusal = (status, {"Retry-After": "0"}, {"detail": f"refused with {status}"})
    with (
        scripted_server(refusal) as script,
        Client(script.url, retries=3, backoff_s=0.01) as client,
        pytest.raises(ApiError) as caught,
    ):
        client.forecast(RAMP, horizon=2)
    assert len(script.requests) == 1
    assert caught.value.status_code == status and caught.value.message == f"refused with {status}"


def test_retries_run_out_then_the_error_is_raised() -> None:
    refusal = (503, {"Retry-After": "0"}, {"detail": "model sine_gru is not ready"})
    with (
        scripted_server(refusal) as script,
        Client(script.url, retries=2, backoff_s=0.01) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.forecast(RAMP, horizon=2)
    assert len(script.requests) == 3 and caught.value.attempts == 3
    assert caught.value.message == "model sine_gru is not ready"


def test_connection_refused_becomes_a_transport_error_after_the_retries() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(nowhere, retries=2, backoff_s=0.01) as client, pytest.raises(TransportError) as caught:
        client.forecast(RAMP, horizon=2)
    assert caught.value.attempts == 3 and "ConnectError" in str(caught.value)


async def test_connection_refused_async() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff_s=0.01) as client:
        with pytest.raises(TransportError) as caught:
            await client.health()
    assert caught.value.attempts == 2 and "ConnectError" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.predict_digit(b"GIF89a..."), "not a PNG, JPEG, WebP or BMP file"),
        (lambda c: c.predict_digit("/no/such/digit.png"), "cannot read the image file"),
        (lambda c: c.predict_digit(np.zeros((28, 27))), "an image is 28×28 or 784 raw pixel values"),
        (lambda c: c.predict_digit([[0] * 28] * 28), "is a list; pass a file path"),
        (lambda c: c.predict_digits([]), "the list is empty"),
        (lambda c: c.predict_digits(np.zeros((28, 28))), "or one image to predict_digit"),
        (lambda c: c.forecast([1.0, float("inf")] * 10, horizon=2), "NaN or infinity"),
        (lambda c: c.forecast(RAMP, horizon=2.5), "pass a whole number of steps"),
        (lambda c: c.forecast(RAMP, horizon=True), "pass a whole number of steps"),
        (lambda c: c.forecast_many([(RAMP, 2)]), "pass ForecastInput(series, horizon)"),
        (lambda c: c.forecast(RAMP, 2, season_length=2.5), "season_length: is 2.5; pass the season's length"),
        (lambda c: c.forecast_many([ForecastInput(RAMP, 2)], season_length=True), "season_length: is True"),
    ],
    ids=[
        "gif",
        "no-file",
        "27-columns",
        "list",
        "no-images",
        "one-image",
        "inf",
        "horizon",
        "bool",
        "tuple",
        "season",
        "season-bool",
    ],
)
def test_inputs_the_client_cannot_send_are_refused_before_sending(call: Any, message: str) -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=0) as client,
        pytest.raises(InputError, match=re.escape(message)),
    ):
        call(client)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": "127.0.0.1:8000"}, "base_url is '127.0.0.1:8000': pass the service's URL"),
        ({"retries": -1}, "retries is -1"),
        ({"timeout": 0}, "timeout is 0"),
        ({"request_timeout_ms": 0}, "request_timeout_ms is 0"),
    ],
    ids=["no-scheme", "retries", "timeout", "request-timeout"],
)
def test_settings_that_cannot_work_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Client(**{"base_url": "http://127.0.0.1:8000", **settings})


def test_importing_the_client_leaves_the_server_stack_and_numpy_out() -> None:
    program = (
        "import sys, rnnserve_client; "
        "print(sorted(m for m in ('fastapi', 'onnxruntime', 'numpy', 'PIL', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_package_needs_only_httpx() -> None:
    requires = importlib.metadata.requires("rnnserve-client") or []
    assert [r for r in requires if "extra ==" not in r] == ["httpx>=0.27"]
    assert importlib.metadata.version("rnnserve-client") == __version__


def test_the_season_length_is_sent_only_when_given() -> None:
    one: Answer = (200, {}, FORECAST_ANSWER)
    two: Answer = (200, {}, {"forecasts": [FORECAST_ANSWER] * 2})
    with scripted_server(one, one, two) as script, Client(script.url) as client:
        client.forecast(RAMP, horizon=2)
        client.forecast(RAMP, horizon=2, season_length=np.int64(4))
        client.forecast_many([ForecastInput(RAMP, 2), ForecastInput(RAMP, 2, season_length=3)])
    plain, hinted, many = (json.loads(body) for body in script.bodies)
    assert "season_length" not in plain and hinted["season_length"] == 4
    assert [entry.get("season_length") for entry in many["inputs"]] == [None, 3]
