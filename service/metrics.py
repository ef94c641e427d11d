"""Prometheus metrics, kept in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_process = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


def process_id() -> int:
    """`os.getpid()` without its system call: kept, and renewed in a forked child."""
    return _process[0]


if values.ValueClass is not values.MutexValue:
    # PROMETHEUS_MULTIPROC_DIR was set when prometheus_client was imported: each value lives in a file of
    # this process's own. prometheus_client asks for the process id on every update, to notice a fork;
    # at c=64 those system calls were 4 % of a worker's event loop. No metric exists yet to hold the old
    # class (they are all made by ServiceMetrics, below).
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)


@dataclass(frozen=True)
class BatcherMetrics:
    """The metrics one model's batcher updates, already labelled with the model's name."""

    batch_size: Histogram
    queue_depth: Gauge
    queue_wait: Histogram
    inference_time: Histogram
    cancelled: Counter
    rejected_overloaded: Counter
    rejected_timeout: Counter
    rejected_shutdown: Counter
    ready: Gauge


class ServiceMetrics:
    """Every metric the service exports.

    With several processes (`multiprocess_dir` set, and PROMETHEUS_MULTIPROC_DIR with it, as the
    server does for its workers and engine), each process writes its values there and `render` sums
    them over all processes: one view of the whole service, whichever worker answers.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rnnserve_http_requests", "HTTP requests answered, by route, method and status code.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "rnnserve_http_request_duration_seconds", "Time from request to response, by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "rnnserve_batch_size", "Inputs per model call.", ["model"], buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "rnnserve_queue_depth", "Inputs waiting for a model call.", ["model"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_wait = Histogram(
            "rnnserve_queue_wait_seconds", "Time an input waits before its model call starts.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_time = Histogram(
            "rnnserve_inference_duration_seconds", "Duration of one model call (a whole batch).",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cancelled = Counter(
            "rnnserve_cancelled_inputs", "Queued inputs skipped because their client went away.",
            ["model"], registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "rnnserve_rejected_inputs", "Inputs refused or dropped: overloaded (429), timeout (504), "
            "shutdown (503).", ["model", "reason"], registry=r,
        )  # fmt: skip
        self.model_ready = Gauge(
            "rnnserve_model_ready", "1 when the model is loaded and warmed up, else 0.", ["model"],
            registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self.model_info = Gauge(
            "rnnserve_model_info", "The model version served, its precision and where it runs (always 1).",
            ["model", "version", "precision", "backend", "provider", "device"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip

        self.model_loads = Counter(
            "rnnserve_model_loads", "Model versions loaded (result=loaded) or that failed to load, verify or "
            "warm up (result=failed), at start-up and since.", ["model", "result"], registry=r,
        )  # fmt: skip
        self.swap_time = Histogram(
            "rnnserve_model_swap_seconds", "From a repository change (a load or unload call, the poll, "
            "SIGHUP) to every process serving it.", ["model"], buckets=SWAP_BUCKETS, registry=r,
        )  # fmt: skip

    def for_batcher(self, model: str) -> BatcherMetrics:
        return BatcherMetrics(
            batch_size=self.batch_size.labels(model),
            queue_depth=self.queue_depth.labels(model),
            queue_wait=self.queue_wait.labels(model),
            inference_time=self.inference_time.labels(model),
            cancelled=self.cancelled.labels(model),
            rejected_overloaded=self.rejected.labels(model, "overloaded"),
            rejected_timeout=self.rejected.labels(model, "timeout"),
            rejected_shutdown=self.rejected.labels(model, "shutdown"),
            ready=self.model_ready.labels(model),
        )

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_process, path=str(self.multiprocess_dir))
        return generate_latest(every_process)
