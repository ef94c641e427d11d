"""Access control (API keys, CORS) and per-request deadlines, on the real app over ASGI."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from service.config import Settings

if TYPE_CHECKING:
    from conftest import ServeApp

FOREVER_MS = 3_600_000.0
DIGIT = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}


async def test_with_api_keys_a_prediction_needs_one_of_them(serve: ServeApp) -> None:
    async with serve(api_keys="first-key, second-key") as (_, client):
        missing = await client.post("/predict/digit", json=DIGIT)
        wrong = await client.post("/predict/digit", json=DIGIT, headers={"Authorization": "Bearer nope"})
        bearer = await client.post(
            "/predict/digit", json=DIGIT, headers={"Authorization": "Bearer first-key"}
        )
        header = await client.post("/predict/digit", json=DIGIT, headers={"X-API-Key": "second-key"})
        models = await client.get("/models")
        ready, live = await client.get("/health/ready"), await client.get("/health/live")
        metrics, docs = await client.get("/metrics"), await client.get("/openapi.json")
    for refused, word in ((missing, "required"), (wrong, "wrong")):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert word in refused.json()["detail"] and "X-API-Key" in refused.json()["detail"]
    assert bearer.status_code == header.status_code == 200
    assert models.status_code == 401
    assert {r.status_code for r in (ready, live, metrics, docs)} == {200}


async def test_metrics_can_require_a_key_and_keys_can_come_from_a_file(
    serve: ServeApp, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("from-file\n\n  spaced  \n", encoding="utf-8")
    async with serve(api_keys_file=keys, metrics_require_key=True) as (_, client):
        refused = await client.get("/metrics")
        allowed = await client.get("/metrics", headers={"X-API-Key": "spaced"})
        predicted = await client.post(
            "/predict/digit", json=DIGIT, headers={"Authorization": "bearer from-file"}
        )
    assert refused.status_code == 401 and allowed.status_code == 200 and predicted.status_code == 200


def test_an_unreadable_key_file_stops_the_service_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"api_keys_file .*missing.* cannot be read"):
        Settings(api_keys_file=tmp_path / "missing")


async def test_no_key_and_no_body_reaches_the_logs(serve: ServeApp, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-key-0042"
    body = {"pixels": [[0] * 12 + [173] * 4 + [0] * 12] * 28}
    with caplog.at_level(logging.DEBUG):
        async with serve(api_keys=secret, log_level="DEBUG") as (_, client):
            await client.post("/predict/digit", json=body, headers={"Authorization": f"Bearer {secret}"})
            await client.post("/predict/digit", json=body, headers={"X-API-Key": "wrong-" + secret})
            await client.post(
                "/forecast", json={"series": [1.25] * 3, "horizon": 2}, headers={"X-API-Key": secret}
            )
    # The message and every extra field; a LogRecord's own attributes (times, thread ids) hold
    # digits that could contain "173" by chance.
    standard = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
    extras = [{k: v for k, v in r.__dict__.items() if k not in standard} for r in caplog.records]
    logged = "\n".join(f"{r.getMessage()} {extra}" for r, extra in zip(caplog.records, extras, strict=True))
    assert "POST /predict/digit" in logged
    assert secret not in logged and "173" not in logged and "1.25" not in logged


async def test_cors_is_closed_by_default_and_open_to_the_configured_origins(serve: ServeApp) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with serve() as (_, client):
        closed = await client.options("/predict/digit", headers=preflight)
    async with serve(cors_origins="https://app.example", api_keys="k") as (_, client):
        allowed = await client.options(
            "/predict/digit", headers=preflight | {"Access-Control-Request-Headers": "x-api-key"}
        )
        other = await client.options("/predict/digit", headers=preflight | {"Origin": "https://evil.example"})
        answer = await client.post(
            "/predict/digit", json=DIGIT, headers={"Origin": "https://app.example", "X-API-Key": "k"}
        )
    assert "access-control-allow-origin" not in closed.headers
    assert (
        allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    )
    assert "access-control-allow-origin" not in other.headers
    assert (
        answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
    )


async def test_a_request_still_queued_at_its_deadline_gets_504_and_is_never_computed(serve: ServeApp) -> None:
    async with serve(max_delay_ms=FOREVER_MS, max_batch_size=64) as (app, client):
        late = await client.post("/predict/digit", json=DIGIT, headers={"X-Request-Timeout-Ms": "150"})
        forecast = await client.post(
            "/forecast", json={"series": [1.0] * 32, "horizon": 2}, headers={"X-Request-Timeout-Ms": "100"}
        )
        registry = app.state.metrics.registry
        timeouts = registry.get_sample_value(
            "rnnserve_rejected_inputs_total", {"model": "digit_lstm", "reason": "timeout"}
        )
        calls = registry.get_sample_value("rnnserve_batch_size_count", {"model": "digit_lstm"})
        depth = registry.get_sample_value("rnnserve_queue_depth", {"model": "digit_lstm"})
    assert late.status_code == forecast.status_code == 504
    assert "deadline" in late.json()["detail"]
    assert (timeouts, calls, depth) == (1.0, 0.0, 0.0)


async def test_a_client_deadline_never_exceeds_the_queue_timeout(serve: ServeApp) -> None:
    async with serve(max_delay_ms=FOREVER_MS, queue_timeout_s=0.2) as (_, client):
        response = await asyncio.wait_for(
            client.post("/predict/digit", json=DIGIT, headers={"X-Request-Timeout-Ms": "600000"}), 30
        )
    assert response.status_code == 504


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
async def test_a_bad_deadline_header_is_a_422(api_client: Any, value: str) -> None:
    response = await api_client.post("/predict/digit", json=DIGIT, headers={"X-Request-Timeout-Ms": value})
    assert response.status_code == 422
    assert "X-Request-Timeout-Ms" in response.json()["detail"]
