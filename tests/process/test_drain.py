"""SIGTERM under load, against a real server: every request whose bytes reached the server gets a
complete answer, readiness turns 503 at once, and the process exits 0 after the whole drain, though the
SIGTERM comes twice. The same when it reaches every process of the service at once (`kill -TERM -PGID`,
systemd's default KillMode=control-group); with one process, with several HTTP workers, and with a model
engine. SIGINT to every process (Ctrl-C in a terminal) stops at once, without the drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from local_server import ServerNotReady, free_port, service_environment, start_server

BODY = json.dumps({"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}).encode()
HEAD = (
    "POST /predict/digit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode()
DRAIN_S = 1.5
CLIENTS = 32

MODES = {
    "1 process": {"workers": "1"},
    "2 workers, models inline": {"workers": "2", "engine": "inline"},
    "2 workers, model engine": {"workers": "2", "engine": "process"},
}

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def service_group(
    models_dir: Path, log_path: Path, **settings: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`python -m service` leading a process group of its own, so that a signal can reach
    every process of the service and nothing else; its port and process, once every HTTP worker serves.
    Whatever is left of the group is killed on the way out."""
    port = free_port()
    environment = service_environment(port, {"model_dir": str(models_dir), "drain_s": "0"} | settings)
    try:
        _, process = start_server(
            [sys.executable, "-m", "service"], port, env=environment, log_path=log_path, own_group=True
        )
    except ServerNotReady as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        wait_for_every_worker(process, log_path, int(settings.get("workers", "1")))
        yield port, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_every_worker(process: subprocess.Popen[bytes], log_path: Path, workers: int) -> None:
    """Until uvicorn has logged the startup of every worker (at INFO): the service answers as soon as
    one serves, and a signal that reaches a worker still starting ends it before it can drain."""
    deadline = time.monotonic() + 120
    while (started := log_path.read_text().count("Application startup complete.")) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{started} of {workers} workers started:\n{log_path.read_text()}", pytrace=False)
        time.sleep(0.1)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers


async def client(port: int, outcomes: Counter[str]) -> None:
    """Requests one after another on a keep-alive connection until the server says `Connection: close`,
    as a load balancer's connection would (it then sends elsewhere). Counts every outcome."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            writer.write(HEAD + BODY)
            status, headers = await answer(reader)
            outcomes[f"answered {status}"] += 1
            if headers.get("connection") == "close":
                outcomes["told to close"] += 1
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        outcomes["reset: sent, never answered"] += 1
    finally:
        writer.close()


async def newcomers(port: int, until: float, outcomes: Counter[str]) -> None:
    """During the drain (until `until`, a `time.monotonic()`), new connections still get answers, each
    telling the client to close."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionError:
            outcomes["newcomer refused"] += 1
            return
        try:
            writer.write(HEAD + BODY)
            status, headers = await answer(reader)
            outcomes[f"newcomer {status}, connection: {headers.get('connection')}"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            outcomes["newcomer reset: sent, never answered"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.05)


def send_sigterm(process: subprocess.Popen[bytes], sent_to: str) -> None:
    if sent_to == "every process":
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("sent_to", ["the main process", "every process"])
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_under_load_answers_everything_received_and_exits_0(
    models_dir: Path, tmp_path: Path, mode: str, sent_to: str
) -> None:
    log_path = tmp_path / "service.log"
    settings = MODES[mode] | {"drain_s": str(DRAIN_S)}
    outcomes: Counter[str] = Counter()
    with service_group(models_dir, log_path, **settings) as (port, process):

        def exit_status() -> tuple[int, float]:
            return process.wait(timeout=60), time.monotonic()

        async def load() -> tuple[int, float, int, float]:
            clients = [asyncio.ensure_future(client(port, outcomes)) for _ in range(CLIENTS)]
            await asyncio.sleep(1.0)
            send_sigterm(process, sent_to)
            stopped = time.monotonic()
            exited = asyncio.ensure_future(asyncio.to_thread(exit_status))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                for _ in range(20):  # through the process manager, the SIGTERM reaches workers within 0.5 s
                    if (ready := (await http.get("/health/ready")).status_code) == 503:
                        break
                    await asyncio.sleep(0.05)
            # Again, as a supervisor may: the drain runs its course all the same.
            send_sigterm(process, sent_to)
            await newcomers(port, stopped + DRAIN_S - 0.2, outcomes)
            await asyncio.wait_for(asyncio.gather(*clients), 60)
            code, exit_time = await exited
            return ready, stopped, code, exit_time

        ready, stopped, code, exit_time = asyncio.run(load())
    took = exit_time - stopped
    log = log_path.read_text()
    print(f"\n{dict(outcomes)}; exit {code} after {took:.1f} s")
    with pytest.raises(ConnectionRefusedError):  # gone: nothing left that accepts and never answers
        asyncio.run(asyncio.open_connection("127.0.0.1", port))
    assert ready == 503
    assert code == 0, log[-5000:]
    assert outcomes["reset: sent, never answered"] == 0, outcomes
    assert outcomes["told to close"] == CLIENTS and outcomes["answered 200"] >= 4 * CLIENTS, outcomes
    assert outcomes["newcomer 200, connection: close"] >= 3, outcomes
    assert set(outcomes) == {"answered 200", "told to close", "newcomer 200, connection: close"}, outcomes
    # None, e.g. of a model engine that had to be killed, or of requests cancelled at the shutdown timeout.
    assert [line for line in log.splitlines() if " ERROR " in line] == []
    assert took >= DRAIN_S  # the drain ran its course
    assert took < DRAIN_S + 10 + 5  # the drain, the shutdown timeout, and room for a loaded machine


@pytest.mark.parametrize("mode", MODES)
def test_sigint_to_every_process_stops_at_once_without_the_drain(
    models_dir: Path, tmp_path: Path, mode: str
) -> None:
    log_path = tmp_path / "service.log"
    with service_group(models_dir, log_path, drain_s="60", **MODES[mode]) as (port, process):
        digit = f"http://127.0.0.1:{port}/predict/digit"
        answered = httpx.post(digit, content=BODY, headers={"content-type": "application/json"}, timeout=30)
        os.killpg(process.pid, signal.SIGINT)
        sent = time.monotonic()
        code = process.wait(timeout=60)
        took = time.monotonic() - sent
    print(f"\nexit {code} {took:.1f} s after SIGINT")
    assert answered.status_code == 200, answered.text
    assert code == 0, log_path.read_text()[-5000:]
    assert took < 10, f"stopped {took:.1f} s after SIGINT, as if it had drained (RNNSERVE_DRAIN_S=60)"
