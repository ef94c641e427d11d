"""Overload against a real server on 127.0.0.1: a burst of 600 connections at once, and 1,000 clients
that give up while queued. Outcomes are asserted; the rejection times are printed, not asserted
(timings belong in benchmarks)."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import METRICS_WRITTEN_S, free_port, start_service

BAR = [[0] * 12 + [200] * 4 + [0] * 12] * 28  # a "1"
BODY = json.dumps({"pixels": BAR}).encode()
HEAD = (
    "POST /predict/digit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode()

pytestmark = pytest.mark.slow


def start(models_dir: Path, log_path: Path, **settings: str) -> tuple[str, subprocess.Popen[bytes]]:
    return start_service(models_dir, log_path, workers="1", **settings)


SERVING_MODES = {
    "one-process": {"workers": "1"},
    # Two HTTP workers and one model engine: a worker refuses on the engine's shared queue state.
    "engine": {"workers": "2", "engine": "process"},
}


@pytest.fixture(params=list(SERVING_MODES))
def held_service(request: pytest.FixtureRequest, models_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A service whose model waits 4 s for a batch to fill (max_batch_size 64): queued inputs stay queued.
    It serves one model per task (models=""), so a full queue refuses a request before its body is read;
    with several, another model of the task might take the request, which only its body can say."""
    url, process = start_service(
        models_dir, tmp_path / "service.log", **SERVING_MODES[request.param], models="",
        max_queue_size="8", max_inputs_per_request="8", max_delay_ms="4000", log_level="WARNING",
    )  # fmt: skip
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


async def post(port: int) -> tuple[int, dict[str, str], float]:
    """One request on its own connection: status, headers and seconds until the answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + BODY)
    raw = await reader.readuntil(b"\r\n\r\n")
    seconds = time.perf_counter() - started
    lines = raw.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers["content-length"]))
    writer.close()
    return int(lines[0].split()[1]), headers, seconds


def metric(url: str, name: str, **labels: str) -> float:
    return sample(httpx.get(f"{url}/metrics").text, name, **labels)


def sample(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


REJECTING_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 429, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
"""


def burst(port: int) -> list[tuple[int, dict[str, str], float]]:
    async def everyone() -> list[tuple[int, dict[str, str], float]]:
        return await asyncio.gather(*(post(port) for _ in range(600)))

    return asyncio.run(everyone())


def rejection_floor_ms(tmp_path: Path) -> float:
    """The median time to a 429 from a server that answers 429 at once, reading nothing: what this
    machine and this client can do at best, measured in the same run."""
    (tmp_path / "rejecting.py").write_text(REJECTING_APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "rejecting:app", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        return statistics.median(seconds for _, _, seconds in burst(port)) * 1000
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_burst_of_600_connections_is_refused_at_once_and_the_admitted_are_answered(
    held_service: str, tmp_path: Path
) -> None:
    port = int(held_service.rsplit(":", 1)[1])
    outcomes = burst(port)
    statuses = [status for status, _, _ in outcomes]
    assert statuses.count(200) == 8 and statuses.count(429) == 592, sorted(set(statuses))
    refused = [(headers, seconds) for status, headers, seconds in outcomes if status == 429]
    assert all(int(headers["retry-after"]) >= 1 for headers, _ in refused)
    time.sleep(METRICS_WRITTEN_S)  # every process's counts written
    assert metric(held_service, "rnnserve_batch_size_sum", model="digit_lstm") == 8
    # Each refusal counted once, by whichever process refused it (an HTTP worker or the model engine).
    overloaded = {"model": "digit_lstm", "reason": "overloaded"}
    assert metric(held_service, "rnnserve_rejected_inputs_total", **overloaded) == 592
    # Two more bursts, on warm code: the first burst ended with its 8 answers, so each admits 8 again.
    medians = [statistics.median(seconds for _, seconds in refused)] + [
        statistics.median(seconds for _, _, seconds in burst(port)) for _ in range(2)
    ]
    print(f"\n429 medians of 3 bursts: {', '.join(f'{m * 1000:.0f}' for m in medians)} ms; "
          f"a server that only answers 429: {rejection_floor_ms(tmp_path):.0f} ms")  # fmt: skip


def test_a_request_is_refused_before_its_body_is_sent_while_the_queue_is_full(held_service: str) -> None:
    """Only the head of each request is sent: a server that read bodies before refusing would wait."""
    port = int(held_service.rsplit(":", 1)[1])
    images = bytes(bytearray(v for row in BAR for v in row)) * 8

    async def head_only() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD)  # a JSON body of len(BODY) bytes is announced, and never sent
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers["content-length"]))
        writer.close()
        return int(lines[0].split()[1]), headers, body

    async def scenario() -> tuple[httpx.Response, list[tuple[int, dict[str, str], bytes]]]:
        async with httpx.AsyncClient(base_url=held_service, timeout=60) as http:
            octets = {"content-type": "application/octet-stream"}
            queued = asyncio.ensure_future(http.post("/predict/digit", content=images, headers=octets))
            for _ in range(300):  # the 8 images wait 4 s for their batch to fill
                await asyncio.sleep(0.01)
                metrics_text = (await http.get("/metrics")).text
                if sample(metrics_text, "rnnserve_queue_depth", model="digit_lstm") == 8:
                    break
            else:
                pytest.fail(f"the 8 images were never seen queued: {queued}")
            try:  # several connections, so that every HTTP worker is asked
                heads = await asyncio.wait_for(asyncio.gather(*(head_only() for _ in range(16))), 30)
            except TimeoutError:
                pytest.fail("a request whose body was not sent got no answer: the queue was not judged first")
            return await queued, heads

    answered, heads = asyncio.run(scenario())
    assert answered.status_code == 200 and len(answered.json()["predictions"]) == 8
    for status, headers, body in heads:
        assert status == 429 and int(headers["retry-after"]) >= 1, (status, body)
        assert b"digit_lstm has 8 inputs waiting (the limit is 8)" in body


def test_a_thousand_clients_that_leave_while_queued_cost_nothing(models_dir: Path, tmp_path: Path) -> None:
    url, process = start(
        models_dir, tmp_path / "service.log",
        max_queue_size="2048", max_delay_ms="6000", max_batch_size="2048", log_level="WARNING",
    )  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    calls_before = metric(url, "rnnserve_batch_size_count", model="digit_lstm")

    async def leave() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + BODY)
        await writer.drain()
        await asyncio.sleep(1.5)  # queued by now: the batch waits up to 6 s to fill
        writer.close()

    async def clients() -> None:
        await asyncio.gather(*(leave() for _ in range(1000)))

    try:
        asyncio.run(clients())
        for _ in range(300):
            if metric(url, "rnnserve_cancelled_inputs_total", model="digit_lstm") == 1000:
                break
            time.sleep(0.1)
        assert metric(url, "rnnserve_cancelled_inputs_total", model="digit_lstm") == 1000
        assert (
            metric(url, "rnnserve_batch_size_count", model="digit_lstm") == calls_before
        )  # nothing computed
        assert metric(url, "rnnserve_queue_depth", model="digit_lstm") == 0
        # The whole queue is free again: 8 requests of 256 images fill it exactly, and all are answered.
        images = bytes(bytearray(v for row in BAR for v in row)) * 256

        async def fill() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                octets = {"content-type": "application/octet-stream"}
                return await asyncio.gather(*(http.post("/predict/digit", content=images, headers=octets)
                                              for _ in range(8)))  # fmt: skip

        assert [r.status_code for r in asyncio.run(fill())] == [200] * 8
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
