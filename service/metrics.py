"""Prometheus metrics, kept in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


FLUSH_INTERVAL_S = 0.25
"""How often a process writes the metric values it changed to its files, where `render` finds them."""


def buffered_values(interval_s: float) -> type:
    """prometheus_client's multiprocess values, each kept in memory and written to this process's file
    every `interval_s` (and by `flush`, which `render` and the process's exit call), not on every update.

    prometheus_client writes every update to its memory-mapped file, behind a lock and a check for a
    fork: about 7 writes a request (a counter's update 1.3 µs warm, 0.5 µs here). Here an update adds to
    a float; the other processes see it at most `interval_s` later, well within any scrape interval.
    """
    in_file = values.MultiProcessValue(process_identifier=process_id)
    lock = threading.Lock()  # around every update and every file operation
    every: list[BufferedValue] = []
    flusher: list[threading.Thread] = []

    class BufferedValue:
        _multiprocess = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with lock:
                self._file = in_file(*args, **kwargs)
                self._value = self._written = self._file.get()
                every.append(self)
                if not flusher:
                    start_flushing()

        def inc(self, amount: float) -> None:
            with lock:
                self._value += amount

        def set(self, value: float, timestamp: float | None = None) -> None:
            with lock:
                self._value = value

        def get(self) -> float:
            return self._value

        def set_exemplar(self, exemplar: Any) -> None:
            return  # prometheus_client keeps no exemplars across processes either

        def get_exemplar(self) -> None:
            return None

        @staticmethod
        def flush() -> None:
            """Write every value changed since the last flush to this process's files."""
            for value in list(every):
                with lock:
                    if value._value != value._written:
                        value._file.set(value._value)
                        value._written = value._value

    def start_flushing() -> None:
        def keep_flushing() -> None:
            while True:
                time.sleep(interval_s)
                BufferedValue.flush()

        flusher.append(threading.Thread(target=keep_flushing, name="metrics-flush", daemon=True))
        flusher[0].start()

    def in_forked_child() -> None:
        # The child writes files of its own (prometheus_client reopens them on its next write): start
        # from their values, not from the parent's unwritten ones, and flush them on a thread of its own.
        lock.release()
        flusher.clear()
        for value in every:
            value._value = value._written = value._file.get()
        if every:
            start_flushing()

    # No other thread holds the lock while the process forks, so the child's lock and files are sound.
    os.register_at_fork(before=lock.acquire, after_in_parent=lock.release, after_in_child=in_forked_child)
    atexit.register(BufferedValue.flush)
    return BufferedValue


if values.ValueClass is not values.MutexValue:
    # PROMETHEUS_MULTIPROC_DIR was set when prometheus_client was imported: each process's values go to
    # files of its own. prometheus_client would also ask for the process id on every update, to notice a
    # fork (at c=64 those system calls were 4 % of a worker's event loop): it is given `process_id`. No
    # metric exists yet to hold the old class (they are all made by ServiceMetrics, below).
    values.ValueClass = buffered_values(FLUSH_INTERVAL_S)


def flush() -> None:
    """Write this process's metric values to its files now (nothing to do in one process)."""
    flush_values = getattr(values.ValueClass, "flush", None)
    if flush_values is not None:
        flush_values()


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
        flush()  # this process's values exact; every other process's at most FLUSH_INTERVAL_S old
        every_process = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_process, path=str(self.multiprocess_dir))
        return generate_latest(every_process)
