"""The benchmark's perf_analyzer-style cell: Triton's own HTTP client (tritonclient) at a fixed
concurrency for a fixed time, counting answers and their latencies.

`concurrency` greenlets share one `tritonclient.http.InferenceServerClient` (gevent underneath, with a
connection each, as its own `async_infer` does); each sends one request, waits for its answer and sends
the next, until the time is up. The client runs in the bench process and costs that process CPU, not
the server's: the server's CPU per request stays comparable with the `hey` cells, its throughput may
be limited by the client (a Python client at concurrency 64 can spend more CPU than the server).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from bench_forms import Form


def run_tritonclient(
    url: str, form: Form, body_file: Path, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Like `bench_load.run_hey`: total_s, p50_ms, p99_ms, statuses, errors, note. `form.body` holds the
    uint8 images (n×28×28) that go, as binary tensor data, to model `form.model`; `body_file` is unused."""
    import gevent
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    images = np.frombuffer(form.body, dtype=np.uint8).reshape(-1, 28, 28)
    pixels = triton.InferInput("pixels", list(images.shape), "UINT8")
    pixels.set_data_from_numpy(images, binary_data=True)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=True)]
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    client = triton.InferenceServerClient(
        url.removeprefix("http://"), concurrency=concurrency, network_timeout=60
    )

    def closed_loop(deadline: float) -> None:
        while (sent := time.perf_counter()) < deadline:
            try:
                client.infer(form.model, [pixels], outputs=outputs)
            except InferenceServerException as exc:
                status = exc.status() or ""
                if status.isdigit():
                    statuses[int(status)] += 1
                else:
                    failures[str(exc.message())[:100]] += 1
                continue
            except OSError as exc:
                failures[f"{type(exc).__name__}: {exc}"[:100]] += 1
                continue
            statuses[200] += 1
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    workers = [gevent.spawn(closed_loop, started + seconds) for _ in range(concurrency)]
    gevent.joinall(workers, timeout=seconds + 60)
    total_s = time.perf_counter() - started
    unfinished = [worker for worker in workers if not worker.ready()]
    gevent.killall(unfinished)
    client.close()
    result: dict[str, Any] = {"statuses": statuses, "errors": sum(failures.values()), "note": ""}
    if failures:
        result["note"] = failures.most_common(1)[0][0]
    if unfinished:
        result["errors"] += len(unfinished)
        result["note"] = f"{len(unfinished)} tritonclient requests did not finish within 60 s"
    if statuses:
        result["total_s"] = total_s
    if latencies:
        p50, p99 = np.percentile(latencies, [50, 99])
        result["p50_ms"], result["p99_ms"] = float(p50) * 1000, float(p99) * 1000
    return result
