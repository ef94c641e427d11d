"""End to end: `python -m service` in its own process on 127.0.0.1, driven over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serving import METRICS_WRITTEN_S, free_port, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningService:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def stop(self) -> tuple[int, list[dict[str, object]]]:
        """SIGTERM, as a container runtime sends it; the exit code and the JSON log lines."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        lines = self.log_path.read_text().splitlines()
        return code, [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def service(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    environment |= {
        "RNNSERVE_PORT": str(port),
        "RNNSERVE_MODEL_DIR": str(models_dir),
        "RNNSERVE_LOG_FORMAT": "json",
        "RNNSERVE_THREADS": "1",
        "RNNSERVE_DRAIN_S": "0",
    }
    log_path = tmp_path_factory.mktemp("e2e") / "service.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=log,
            text=True,
        )
    running = RunningService(f"http://127.0.0.1:{port}", process, log_path)
    wait_until_ready(running.url, process, log_path.read_text)
    yield running
    running.stop()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_readme_requests_work(
    service: RunningService, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    with httpx.Client(base_url=service.url, timeout=30) as http:
        upload = http.post("/predict/digit", files={"file": ("digit.png", png(images[0]), "image/png")})
        assert upload.status_code == 200 and upload.json()["digit"] == labels[0]
        pixels = http.post("/predict/digit", json={"pixels": images[0].tolist()})
        assert pixels.json()["digit"] == labels[0]
        forecast = http.post("/forecast", json={"series": list(np.sin(np.arange(100) / 5)), "horizon": 12})
        assert forecast.status_code == 200 and len(forecast.json()["forecast"]) == 12
        bad = http.post("/forecast", json={"series": [1, 2, 3], "horizon": 12})
        assert bad.status_code == 422 and "needs 16 to 4096" in bad.json()["detail"]
        models = http.get("/models").json()["models"]
        assert {m["execution_provider"] for m in models} == {"CPUExecutionProvider"}


async def test_sixty_four_concurrent_clients_share_model_calls(
    service: RunningService, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    limits = httpx.Limits(max_connections=64)
    await asyncio.sleep(METRICS_WRITTEN_S)  # what earlier tests counted, written by both workers
    async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
        before = batch_size_count_and_sum((await http.get("/metrics")).text)

        async def client(index: int) -> list[int]:
            digits = []
            for i in range(index, index + 5 * 64, 64):
                response = await http.post("/predict/digit", json={"pixels": images[i].tolist()})
                assert response.status_code == 200, response.text
                digits.append(response.json()["digit"])
            return digits

        answers = await asyncio.gather(*(client(i) for i in range(64)))
        await asyncio.sleep(METRICS_WRITTEN_S)  # both workers' model calls counted
        after = batch_size_count_and_sum((await http.get("/metrics")).text)
    calls, inputs = after[0] - before[0], after[1] - before[1]
    assert inputs == 320
    assert calls < 320, "the 64 clients never shared a model call"
    predicted = np.array([d for index in range(64) for d in answers[index]])
    expected = np.array([labels[i] for index in range(64) for i in range(index, index + 5 * 64, 64)])
    assert (predicted == expected).mean() >= 0.95


def batch_size_count_and_sum(metrics_text: str) -> tuple[float, float]:
    (family,) = (f for f in text_string_to_metric_families(metrics_text) if f.name == "rnnserve_batch_size")
    values = {
        s.name: s.value for s in family.samples if s.labels["model"] == "digit_lstm" and "le" not in s.labels
    }
    return values["rnnserve_batch_size_count"], values["rnnserve_batch_size_sum"]


def test_sigterm_stops_it_cleanly_and_every_log_line_is_json_with_a_request_id(
    service: RunningService,
) -> None:
    traced = httpx.post(
        f"{service.url}/predict/digit",
        json={"pixels": [0, 255] * 392},
        headers={"X-Request-ID": "e2e-trace-1"},
    )
    assert traced.headers["x-request-id"] == "e2e-trace-1"
    code, lines = service.stop()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert code in (0, -signal.SIGTERM)
    raw = service.log_path.read_text().splitlines()
    assert len(lines) == len(raw), "some log lines are not JSON"
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    (request_line,) = [line for line in lines if line["request_id"] == "e2e-trace-1"]
    assert (request_line["message"], request_line["status"]) == ("POST /predict/digit", 200)
    messages = [str(line["message"]) for line in lines]
    assert any(m.startswith("serving digit_lstm version") for m in messages)
    assert any("Application startup complete" in m for m in messages)
    assert any("Application shutdown complete" in m for m in messages)
    assert any(m.startswith("Finished server process") for m in messages)
