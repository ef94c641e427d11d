"""Helpers for the tests that run the service in its own process on 127.0.0.1.

A thin layer over scripts/local_server.py (importable through pytest's `pythonpath`), which the
benchmark, soak and load-test scripts share: here a server that exits or is not ready fails the test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import local_server
import pytest
from local_server import ServerNotReady, free_port

from service.metrics import FLUSH_INTERVAL_S

__all__ = [
    "METRICS_WRITTEN_S",
    "REPO_ROOT",
    "free_port",
    "one_worker_service",
    "start_service",
    "wait_until_ready",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
METRICS_WRITTEN_S = 3 * FLUSH_INTERVAL_S
"""Time enough for every process of a service to have written the metric values it changed: /metrics
shows the answering process's values at once, the others' at most FLUSH_INTERVAL_S after they change."""


def wait_until_ready(
    url: str, process: subprocess.Popen, output: Callable[[], str], timeout_s: float = 120.0
) -> None:
    """Poll `url`/health/ready until it answers 200; fail with the server's output if it exits or
    is not ready within `timeout_s`."""
    try:
        local_server.wait_until_ready(url, process, output, timeout_s)
    except ServerNotReady as exc:
        pytest.fail(str(exc), pytrace=False)


def start_service(models_dir: Path, log_path: Path, **settings: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m service` on a free port with the committed models and the given RNNSERVE_* settings
    (by lower-case name), its output in `log_path`; its URL and process, once ready. Its temporary files
    go to a folder beside the log (TMPDIR), so that what a server killed by SIGKILL leaves there goes
    with the test's own folder."""
    # No drain unless a test asks for one: it would only make each stop take longer.
    chosen = {"model_dir": str(models_dir), "drain_s": "0"} | settings
    scratch = log_path.with_name(f"{log_path.stem}.tmp")
    scratch.mkdir(exist_ok=True)
    try:
        return local_server.start_service(chosen, log_path=log_path, scratch=scratch)
    except ServerNotReady as exc:
        pytest.fail(str(exc), pytrace=False)


@contextmanager
def one_worker_service(log_path: Path, **settings: str) -> Iterator[str]:
    """The committed models served by one worker with one ONNX Runtime thread and the given settings,
    for the length of a `with`; its URL."""
    url, process = start_service(REPO_ROOT / "models", log_path, workers="1", threads="1", **settings)
    try:
        yield url
    finally:
        local_server.stop(process)
