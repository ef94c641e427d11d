"""SIGTERM under load, against a real server: every request whose bytes reached the server gets a
complete answer, readiness turns 503 at once, and the process exits 0 after the drain."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from serving import start_service

BODY = json.dumps({"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}).encode()
HEAD = (
    "POST /predict/digit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode()
DRAIN_S = 1.5

pytestmark = pytest.mark.slow


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


async def newcomers(port: int, seconds: float, outcomes: Counter[str]) -> None:
    """During the drain, new connections still get answers (each telling the client to close)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + BODY)
        status, headers = await answer(reader)
        outcomes[f"newcomer {status}, connection: {headers.get('connection')}"] += 1
        writer.close()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_answers_everything_received_and_exits_0(
    models_dir: Path, tmp_path: Path, workers: str
) -> None:
    url, process = start_service(
        models_dir, tmp_path / "service.log", workers=workers, drain_s=str(DRAIN_S), log_level="WARNING"
    )
    port = int(url.rsplit(":", 1)[1])
    outcomes: Counter[str] = Counter()

    async def load() -> tuple[int, float]:
        clients = [asyncio.ensure_future(client(port, outcomes)) for _ in range(32)]
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(20):  # with several workers, the SIGTERM reaches them within 0.5 s
                if (ready := (await http.get("/health/ready")).status_code) == 503:
                    break
                await asyncio.sleep(0.05)
        await newcomers(port, DRAIN_S - 0.8, outcomes)
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        return ready, stopped

    ready, stopped = asyncio.run(load())
    code = process.wait(timeout=60)
    took = time.monotonic() - stopped
    print(f"\n{dict(outcomes)}; exit {code} after {took:.1f} s")
    with pytest.raises(ConnectionRefusedError):  # gone: nothing left that accepts and never answers
        asyncio.run(asyncio.open_connection("127.0.0.1", port))
    assert ready == 503
    assert code == 0, (tmp_path / "service.log").read_text()
    assert outcomes["reset: sent, never answered"] == 0, outcomes
    assert outcomes["told to close"] == 32 and outcomes["answered 200"] > 32
    assert outcomes["newcomer 200, connection: close"] >= 3, outcomes
    assert set(outcomes) == {"answered 200", "told to close", "newcomer 200, connection: close"}, outcomes
    assert took < DRAIN_S + 10 + 5  # the drain, the shutdown timeout, and room for a loaded machine
