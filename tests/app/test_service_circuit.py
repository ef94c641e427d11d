"""A model that keeps failing turns not ready, is probed in the background, and comes back.

The fault is injected into the real ONNX Runtime session's calls once the app has started: a model
that loads and warms up, then fails at run time, cannot be made otherwise.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pytest

from service.runtimes.onnx import OnnxRuntime

if TYPE_CHECKING:
    from conftest import ServeApp

DIGIT = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}


async def test_a_model_that_keeps_failing_turns_not_ready_and_comes_back(
    serve: ServeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = threading.Event()
    real_run = OnnxRuntime.run

    def run(self: OnnxRuntime, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if failing.is_set():
            raise RuntimeError("injected fault")
        return real_run(self, inputs)

    monkeypatch.setattr(OnnxRuntime, "run", run)
    async with serve(failures_before_unready=3, probe_interval_s=0.05) as (app, client):
        failing.set()
        statuses = [(await client.post("/predict/digit", json=DIGIT)).status_code for _ in range(4)]
        refused = await client.post("/predict/digit", json=DIGIT)
        ready = await client.get("/health/ready")
        gauge = app.state.metrics.registry.get_sample_value("rnnserve_model_ready", {"model": "digit_lstm"})
        forecast = await client.post("/forecast", json={"series": [1.0, 2.0] * 16, "horizon": 2})
        failing.clear()
        for _ in range(400):  # the probe runs every 0.05 s
            if (back := await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        answered = await client.post("/predict/digit", json=DIGIT)
        gauge_after = app.state.metrics.registry.get_sample_value(
            "rnnserve_model_ready", {"model": "digit_lstm"}
        )
    assert statuses == [500, 500, 500, 503]
    assert refused.status_code == 503 and "last 3 model calls failed" in refused.json()["detail"]
    assert ready.status_code == 503
    assert "injected fault" in ready.json()["models"]["digit_lstm"]
    assert ready.json()["models"]["sine_gru"] == "ready" and forecast.status_code == 500  # its own count
    assert gauge == 0.0
    assert back.status_code == 200 and answered.status_code == 200 and gauge_after == 1.0
