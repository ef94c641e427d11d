"""A small load test: latency and throughput of the service at a few concurrency levels.

    python scripts/loadtest.py --serve                       # starts `python -m service` itself
    python scripts/loadtest.py --url http://127.0.0.1:8000   # or measures a running service

Each of `--concurrency` clients sends its requests one after another over its own keep-alive
connection; the table gives throughput, latency percentiles and the mean number of inputs per model
call (from the service's /metrics). With --serve, RNNSERVE_* variables of this shell configure the
service, as they would `make serve`. Client and service share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
from local_server import ServerNotReady, start_service, stop

MODEL_OF_ROUTE = {"/predict/digit": "digit_lstm", "/forecast": "sine_gru"}


def payload(route: str, seed: int = 0) -> bytes:
    """One request body: a 28×28 digit-like image, or a 256-value series with a 32-step horizon."""
    rng = np.random.default_rng(seed)
    if route == "/predict/digit":
        pixels = np.zeros((28, 28), dtype=np.int64)
        pixels[4:24, 12:16] = rng.integers(128, 256, size=(20, 4))  # a "1"
        return json.dumps({"pixels": pixels.tolist()}).encode()
    t = np.arange(256)
    series = np.sin(t / 8.0) + 0.1 * rng.normal(size=t.size)
    return json.dumps({"series": series.round(4).tolist(), "horizon": 32}).encode()


def batch_totals(metrics_text: str, model: str) -> tuple[float, float]:
    """(model calls, inputs) so far for `model`, from the Prometheus text of /metrics."""
    calls = inputs = 0.0
    for line in metrics_text.splitlines():
        if f'model="{model}"' not in line:
            continue
        if line.startswith("rnnserve_batch_size_count"):
            calls = float(line.rsplit(" ", 1)[1])
        elif line.startswith("rnnserve_batch_size_sum"):
            inputs = float(line.rsplit(" ", 1)[1])
    return calls, inputs


@dataclass
class Result:
    route: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float

    def row(self) -> str:
        p50, p90, p99 = np.percentile(self.latencies_ms, [50, 90, 99])
        return (
            f"| {self.route} | {self.concurrency} | {self.requests} | {self.requests / self.seconds:,.0f} | "
            f"{p50:.1f} | {p90:.1f} | {p99:.1f} | {self.mean_batch:.1f} |"
        )


class Connection:
    """One keep-alive HTTP/1.1 connection that posts a fixed body and reads the answer.

    Deliberately minimal: the load generator shares the cores with the service, and a full client
    (httpx's pool, at 64 connections) spends more CPU per request than the service does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, host: str, port: int, route: str, body: bytes) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        head = (
            f"POST {route} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return cls(reader, writer, head.encode() + body)

    async def post(self) -> tuple[int, bytes]:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def measure(url: str, route: str, concurrency: int, requests_per_client: int, warmup: int) -> Result:
    address = httpx.URL(url)
    host, port = address.host, address.port or 80
    body = payload(route)
    connections = [await Connection.open(host, port, route, body) for _ in range(concurrency)]

    async def client(connection: Connection, count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            status, answer = await connection.post()
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"{route} answered {status}: {answer[:200]!r}")

    try:
        await asyncio.gather(*(client(c, warmup, []) for c in connections))
        before = batch_totals(httpx.get(f"{url}/metrics").text, MODEL_OF_ROUTE[route])
        latencies: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(*(client(c, requests_per_client, latencies) for c in connections))
        seconds = time.perf_counter() - started
        after = batch_totals(httpx.get(f"{url}/metrics").text, MODEL_OF_ROUTE[route])
    finally:
        for connection in connections:
            connection.close()
    calls, inputs = after[0] - before[0], after[1] - before[1]
    return Result(route, concurrency, len(latencies), seconds, latencies, inputs / max(calls, 1))


@contextmanager
def started_service() -> Iterator[str]:
    """`python -m service` on a free port, with this shell's RNNSERVE_* settings; its URL once ready."""
    # A log line per request would be measured too, unless this shell asks for them.
    settings = {} if "RNNSERVE_LOG_LEVEL" in os.environ else {"log_level": "WARNING"}
    try:
        url, process = start_service(settings, inherit=True)
    except ServerNotReady as exc:
        raise SystemExit(str(exc)) from None
    try:
        yield url
    finally:
        stop(process, timeout_s=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", default="http://127.0.0.1:8000", help="a running service")
    target.add_argument("--serve", action="store_true", help="start `python -m service` for the run")
    parser.add_argument("--routes", nargs="+", default=list(MODEL_OF_ROUTE), choices=list(MODEL_OF_ROUTE))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per row (split over the clients)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per client first")
    args = parser.parse_args()

    async def run(url: str) -> list[Result]:
        results = []
        for route in args.routes:
            for concurrency in args.concurrency:
                per_client = max(1, args.requests // concurrency)
                results.append(await measure(url, route, concurrency, per_client, args.warmup))
                print(f"measured {route} at concurrency {concurrency}", file=sys.stderr)
        return results

    if args.serve:
        with started_service() as url:
            results = asyncio.run(run(url))
    else:
        results = asyncio.run(run(args.url))
    print(
        "| route | concurrency | requests | throughput (req/s) | p50 (ms) | p90 (ms) | p99 (ms) "
        "| inputs per model call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
