"""Several HTTP workers, as real processes on 127.0.0.1: with one model engine that batches for
all of them (`RNNSERVE_ENGINE=process`), and with models in each worker (`inline`)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from process_stats import process_tree
from prometheus_client.parser import text_string_to_metric_families
from serving import METRICS_WRITTEN_S, REPO_ROOT, start_service

from service.repository import model_names

MODELS_DIR = REPO_ROOT / "models"

OCTETS = {"content-type": "application/octet-stream"}

pytestmark = pytest.mark.slow


class Service:
    def __init__(self, models_dir: Path, log_path: Path, **settings: str) -> None:
        self.log_path = log_path
        self.url, self.process = start_service(models_dir, log_path, threads="1", **settings)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module", params=["process", "inline"])
def service(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    log_path = tmp_path_factory.mktemp("workers") / f"{request.param}.log"
    running = Service(models_dir, log_path, workers="2", engine=request.param)
    yield running
    running.stop()


def samples(metrics_text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name
    }


async def test_answers_batched_across_workers_equal_answers_computed_alone(
    service: Service, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        alone = [
            (await http.post("/predict/digit", json={"pixels": images[i].tolist()})).json() for i in range(48)
        ]

    # 48 clients at once, each on its own connection, so the kernel spreads them over both workers.
    async def client(index: int) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as own:
            response = await own.post("/predict/digit", json={"pixels": images[index].tolist()})
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

    together = await asyncio.gather(*(client(i) for i in range(48)))
    for single, batched in zip(alone, together, strict=True):
        assert batched["digit"] == single["digit"]
        np.testing.assert_allclose(batched["probabilities"], single["probabilities"], rtol=0, atol=1e-5)
    assert np.mean([a["digit"] == labels[i] for i, a in enumerate(together)]) >= 0.95


async def test_metrics_show_every_worker_and_the_model_calls_they_shared(
    service: Service, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_test_set
    await asyncio.sleep(METRICS_WRITTEN_S)  # what earlier tests counted, written by every worker
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        before = samples((await http.get("/metrics")).text, "rnnserve_batch_size_sum")
        requests_before = samples((await http.get("/metrics")).text, "rnnserve_http_requests_total")

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as own:
            for i in range(4):
                response = await own.post(
                    "/predict/digit", content=images[index * 4 + i].tobytes(), headers=OCTETS
                )
                assert response.status_code == 200, response.text

    await asyncio.gather(*(client(i) for i in range(32)))
    route = (("method", "POST"), ("route", "/predict/digit"), ("status", "200"))
    # Whichever worker answers /metrics, it shows the sum over every process, once each has written it.
    await asyncio.sleep(METRICS_WRITTEN_S)
    for _ in range(6):
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as fresh:
            text = (await fresh.get("/metrics")).text
        inputs = samples(text, "rnnserve_batch_size_sum")[(("model", "digit_lstm"),)]
        assert inputs - before[(("model", "digit_lstm"),)] == 128
        answered = samples(text, "rnnserve_http_requests_total")[route] - requests_before.get(route, 0.0)
        assert answered == 128
        ready = samples(text, "rnnserve_model_ready")
        assert ready == {(("model", name),): 1.0 for name in model_names(MODELS_DIR)}


async def test_readiness_and_models_describe_the_served_models(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        ready = await http.get("/health/ready")
        models = (await http.get("/models")).json()["models"]
        forecast = await http.post(
            "/forecast", json={"series": list(np.sin(np.arange(64) / 4)), "horizon": 5}
        )
        bad = await http.post("/forecast", json={"series": [1, 2, 3], "horizon": 5})
    assert ready.status_code == 200 and ready.json()["models"] == {
        n: "ready" for n in model_names(MODELS_DIR)
    }
    assert {m["name"] for m in models} == set(model_names(MODELS_DIR)) and all(m["ready"] for m in models)
    assert forecast.status_code == 200 and len(forecast.json()["forecast"]) == 5
    assert bad.status_code == 422 and "needs 16 to 4096" in bad.json()["detail"]


async def test_the_answers_name_the_precision_the_models_run_in(
    service: Service, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """With the model engine, a worker's front builds the answers and the engine runs the models: both
    choose each model's precision, and they choose alike (auto, one thread per model call: digit_rnn's
    and digit_lstm's int8 graphs, digit_gru's float graph)."""
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        models = {m["name"]: m for m in (await http.get("/models")).json()["models"]}
        answers = [
            await http.post(
                f"/predict/digit?model={name}", content=mnist_test_set[0][:3].tobytes(), headers=OCTETS
            )
            for name in ("digit_lstm", "digit_gru", "digit_rnn")
        ]
        forecast = await http.post("/forecast", json={"series": list(range(20)), "horizon": 2})
    expected = {"digit_lstm": "int8", "digit_gru": "fp32", "digit_rnn": "int8"}
    for answer in answers:
        predictions = answer.json()["predictions"]
        name = predictions[0]["model"]
        assert models[name]["precision"] == expected[name], models[name]
        assert {p["precision"] for p in predictions} == {expected[name]}
    assert models["series_gru"]["precision"] == forecast.json()["precision"] == "fp32"


def sockets_on(port: int, states: set[str]) -> set[str]:
    """The inodes of this machine's TCP sockets whose local port is `port`, in one of `states` (Linux's
    codes in /proc/net/tcp: 01 established, 0A listening)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in states:
                found.add(fields[9])
    return found


def held_by(pids: list[int], inodes: set[str]) -> dict[int, set[str]]:
    """Which of `inodes` each process of `pids` holds open."""
    held: dict[int, set[str]] = {}
    for pid in pids:
        descriptors = Path(f"/proc/{pid}/fd")
        for fd in descriptors.iterdir() if descriptors.exists() else ():
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    held.setdefault(pid, set()).add(link[8:-1])
    return held


def test_each_worker_accepts_on_its_own_socket_and_new_connections_spread_over_them(service: Service) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    tree = process_tree(service.process.pid)  # the server, its workers and the model engine
    deadline = time.monotonic() + 60  # the service is ready once one worker is: the other may still load
    while len(listening := held_by(tree, sockets_on(port, {"0A"}))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(listening) == 2, listening  # the two HTTP workers: not the server's guard, nor the engine
    assert all(len(inodes) == 1 for inodes in listening.values()), listening
    assert len(set.union(*listening.values())) == 2, listening  # a socket each, not one shared
    # 32 connections opened at once, as a client's pool opens them, then a request on each. On one shared
    # socket, the worker that woke first took most of such a burst; with a socket each, the kernel
    # spreads them (each worker gets fewer than 4 of 32 once in 400,000 runs).
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(32)]
    try:
        for connection in connections:
            connection.connect()
        for connection in connections:
            connection.request("GET", "/health/live")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        held = held_by(tree, sockets_on(port, {"01"}))
    finally:
        for connection in connections:
            connection.close()
    counts = sorted(len(inodes) for inodes in held.values())
    assert sum(counts) == 32 and len(counts) == 2 and counts[0] >= 4, held


def test_sigterm_answers_every_request_in_flight_then_exits_cleanly(
    models_dir: Path, tmp_path: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    service = Service(
        models_dir, tmp_path / "service.log", workers="2", engine="process", max_queue_size="4096"
    )
    body = images[:64].tobytes()

    async def load() -> list[httpx.Response]:
        async def client() -> httpx.Response:
            async with httpx.AsyncClient(base_url=service.url, timeout=60) as own:
                return await own.post("/predict/digit", content=body, headers=OCTETS)

        requests = [asyncio.ensure_future(client()) for _ in range(24)]
        await asyncio.sleep(0.3)  # the requests are sent and are being computed
        service.process.send_signal(signal.SIGTERM)
        return await asyncio.gather(*requests)

    responses = asyncio.run(load())
    code = service.stop()
    log = service.log_path.read_text()
    assert code == 0, log
    assert [r.status_code for r in responses] == [200] * len(responses)
    predicted = np.array([p["digit"] for p in responses[0].json()["predictions"]])
    assert (predicted == labels[:64]).mean() >= 0.95
    assert "the model engine stopped" in log


async def test_a_worker_reports_a_model_of_the_wrong_task_as_not_loaded(
    models_dir: Path, tmp_path: Path
) -> None:
    """A worker checks the configured models' tasks as the engine does, and says which file is wrong."""
    from service.config import Settings
    from service.engine.client import RemoteRegistry
    from service.errors import ModelNotReady
    from service.tasks.digits import DigitClassifier
    from service.tasks.forecasts import Forecaster

    repository = tmp_path / "models"
    shutil.copytree(models_dir, repository)
    shutil.copytree(repository / "digit_lstm", repository / "more_digits")
    settings = Settings(
        model_dir=repository, forecast_model="more_digits", engine_address=f"ipc://{tmp_path}/nobody-listens"
    )
    registry = await RemoteRegistry.open(settings)
    try:
        assert registry.for_task(DigitClassifier, None).name == "digit_lstm"
        with pytest.raises(
            ModelNotReady, match=r"more_digits.*task is 'digit-classification'.*'forecasting'"
        ):
            registry.for_task(Forecaster, None)
    finally:
        await registry.close()


def test_one_model_cannot_serve_both_tasks() -> None:
    from pydantic import ValidationError

    from service.config import Settings

    with pytest.raises(ValidationError, match="both name 'digit_lstm'"):
        Settings(forecast_model="digit_lstm")
