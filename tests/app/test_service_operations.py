"""Operations: health, /models, /metrics, request ids, logs, the API docs, and clients that leave."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Scope

from service.app import create_app
from service.config import Settings
from service.logs import JsonFormatter, configure_logging
from service.repository import model_names

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

if TYPE_CHECKING:
    from conftest import ServeApp

BAR = [[0] * 12 + [200] * 4 + [0] * 12 for _ in range(28)]  # a "1"


async def until(condition: Callable[[], bool]) -> None:
    """Wait for something the app does in the background; fail rather than hang."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


async def test_health_live_and_ready(api_client: httpx.AsyncClient, models_dir: Path) -> None:
    live = await api_client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "live"}
    ready = await api_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {n: "ready" for n in model_names(models_dir)}}


async def test_models_says_what_runs_where(api_client: httpx.AsyncClient, models_dir: Path) -> None:
    described = (await api_client.get("/models")).json()
    assert described["backend"] == "onnx"
    by_name = {m["name"]: m for m in described["models"]}
    assert set(by_name) == set(model_names(models_dir))
    for name, model in by_name.items():
        on_disk = json.loads((models_dir / name / model["version"] / "metadata.json").read_text())
        assert model["metadata"] == on_disk  # training metrics, config, checksums, as exported
        assert model["ready"] is True
        assert model["backend"] == "onnx"
        assert model["execution_provider"] == "CPUExecutionProvider"  # no GPU on the test machines
        assert model["device"] == "cpu"
        assert model["threads"] == len(os.sched_getaffinity(0))  # RNNSERVE_THREADS=0: one per core
        assert model["batching"] == {
            "max_batch_size": 64,
            "max_delay_ms": 0.0,
            "max_queue_size": 1024,
            "queue_timeout_s": 30.0,
            "queue_depth": 0,
        }
    assert by_name["digit_lstm"]["task"] == "digit-classification"
    assert by_name["sine_gru"]["task"] == "forecasting"


async def test_per_model_batching_overrides_apply_to_that_model_only(serve: ServeApp) -> None:
    overrides = {"sine_gru": {"max_batch_size": 16, "max_delay_ms": 2.5}}
    async with serve(max_batch_size=32, model_batching=overrides) as (_, client):
        by_name = {m["name"]: m["batching"] for m in (await client.get("/models")).json()["models"]}
    assert (by_name["digit_lstm"]["max_batch_size"], by_name["digit_lstm"]["max_delay_ms"]) == (32, 0.0)
    assert (by_name["sine_gru"]["max_batch_size"], by_name["sine_gru"]["max_delay_ms"]) == (16, 2.5)


async def test_the_newest_version_is_served(serve: ServeApp, models_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(models_dir, repository)
    current = max(
        (p for p in (repository / "digit_lstm").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    newest = repository / "digit_lstm" / "12"
    shutil.copytree(current, newest)
    (repository / "digit_lstm" / "9").mkdir()  # older and empty: never looked at
    (repository / "digit_lstm" / "notes").mkdir()  # not a version
    async with serve(model_dir=repository) as (_, client):
        answer = (await client.post("/predict/digit", json={"pixels": BAR})).json()
        described = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
    assert answer["version"] == "12"
    assert described["digit_lstm"]["version"] == "12"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_count_requests_by_route_and_status_and_time_the_models(serve: ServeApp) -> None:
    async with serve() as (_, client):
        await client.post("/predict/digit", json={"pixels": BAR})
        await client.post("/predict/digit", json={"pixels": [1]})
        await client.post("/forecast", json={"series": [1.0] * 20, "horizon": 3})
        await client.get("/no/such/route")
        text = (await client.get("/metrics")).text
    found = families(text)
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in found["rnnserve_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/predict/digit", "POST", "200")] == 1
    assert requests[("/predict/digit", "POST", "422")] == 1
    assert requests[("/forecast", "POST", "200")] == 1
    assert requests[("unmatched", "GET", "404")] == 1

    def count(family: str, model: str) -> float:
        (value,) = [
            s.value
            for s in found[family].samples
            if s.name.endswith("_count") and s.labels.get("model") == model
        ]
        return float(value)

    for model in ("digit_lstm", "series_gru"):
        assert count("rnnserve_batch_size", model) == 1
        assert count("rnnserve_queue_wait_seconds", model) == 1
        assert count("rnnserve_inference_duration_seconds", model) == 1
    latency = [
        s for s in found["rnnserve_http_request_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert {s.labels["route"] for s in latency} >= {"/predict/digit", "/forecast"}
    depth = {s.labels["model"]: s.value for s in found["rnnserve_queue_depth"].samples}
    assert depth == dict.fromkeys(model_names(MODELS_DIR), 0.0)
    ready = {s.labels["model"]: s.value for s in found["rnnserve_model_ready"].samples}
    assert ready == dict.fromkeys(model_names(MODELS_DIR), 1.0)


async def test_every_response_carries_a_request_id(api_client: httpx.AsyncClient) -> None:
    first = await api_client.get("/health/live")
    second = await api_client.post("/predict/digit", json={"pixels": [1]})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    given = await api_client.get("/health/live", headers={"X-Request-ID": "client-trace-42"})
    assert given.headers["x-request-id"] == "client-trace-42"
    unsafe = await api_client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_request_logs_carry_the_request_id(serve: ServeApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.middleware"):
        async with serve() as (_, client):
            await client.post(
                "/forecast", json={"series": [1.0] * 3, "horizon": 1}, headers={"X-Request-ID": "r-1"}
            )
    (record,) = [r for r in caplog.records if r.name == "service.middleware"]
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "POST /forecast"
    assert line["status"] == 422 and line["duration_ms"] >= 0
    assert line["request_id"] == "r-1"  # set by the middleware, read by the formatter
    assert line["level"] == "INFO" and line["logger"] == "service.middleware"


def test_configure_logging_sends_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        logging.getLogger("service.example").warning("hello %s", "world", extra={"model": "m"})
        logging.getLogger("uvicorn.error").info("uvicorn speaks too")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "hello world" and lines[0]["model"] == "m" and lines[0]["request_id"] == "-"
    assert lines[1]["logger"] == "uvicorn.error"


async def test_the_api_docs_describe_every_request_form(api_client: httpx.AsyncClient) -> None:
    spec = (await api_client.get("/openapi.json")).json()
    digit = spec["paths"]["/predict/digit"]["post"]
    assert set(digit["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
        "application/octet-stream",
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/bmp",
    }
    forms = digit["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [sorted(form["properties"]) for form in forms] == [
        ["model", "pixels"],
        ["image", "model"],
        ["inputs", "model"],
    ]
    assert forms[0]["properties"]["model"]["enum"] == ["digit_lstm", "digit_gru", "digit_rnn"]
    assert [p["name"] for p in digit["parameters"]] == ["model"]
    assert digit["parameters"][0]["schema"]["enum"] == ["digit_lstm", "digit_gru", "digit_rnn"]
    assert {"200", "413", "422", "429", "503"} <= set(digit["responses"])
    forecast = spec["paths"]["/forecast"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    alone, many = forecast["oneOf"]
    assert sorted(alone["properties"]) == [
        "horizon",
        "levels",
        "model",
        "quantiles",
        "season_length",
        "series",
    ]
    assert sorted(many["properties"]) == ["inputs", "model"]
    # The default forecaster's limits, from its metadata.
    series = alone["properties"]["series"]
    assert (series["minItems"], series["maxItems"]) == (16, 4096)
    assert alone["properties"]["horizon"]["maximum"] == 128
    assert "$ref" not in json.dumps(forecast)  # inlined, so it resolves anywhere
    # The prediction routes come first in /docs.
    assert list(spec["paths"])[:2] == ["/predict/digit", "/forecast"]


async def test_a_client_that_leaves_has_its_queued_input_skipped_and_counted(
    service_settings: Callable[..., Settings],
) -> None:
    """A request whose client disconnects while it waits is answered with nothing, its input is
    dropped before the model call and counted; the other requests of the batch are unaffected."""
    app = create_app(service_settings(max_batch_size=2, max_delay_ms=3_600_000))
    async with LifespanManager(app, startup_timeout=120) as manager:
        gone = asyncio.Event()
        sent: list[Message] = []
        body = json.dumps({"pixels": BAR}).encode()
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict/digit",
            "raw_path": b"/predict/digit",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("rnnserve", 80),
        }
        registry = app.state.metrics.registry
        leaving = asyncio.ensure_future(manager.app(scope, receive, send))
        await until(lambda: registry.get_sample_value("rnnserve_queue_depth", {"model": "digit_lstm"}) == 1)
        gone.set()
        await asyncio.wait_for(leaving, 60)
        assert sent[0]["status"] == 499  # never delivered: the client is gone

        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve") as client:
            staying = await client.post("/predict/digit", json={"pixels": BAR})  # completes the batch of 2
        assert staying.status_code == 200
        assert registry.get_sample_value("rnnserve_cancelled_inputs_total", {"model": "digit_lstm"}) == 1
        assert registry.get_sample_value("rnnserve_batch_size_sum", {"model": "digit_lstm"}) == 1
