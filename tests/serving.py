"""Helpers for the tests that run the service in its own process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(
    url: str, process: subprocess.Popen, output: Callable[[], str], timeout_s: float = 120.0
) -> None:
    """Poll `url`/health/ready until it answers 200; fail with the server's output if it exits or
    is not ready within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{output()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the service was not ready within {timeout_s:.0f} s:\n{output()}")


REPO_ROOT = Path(__file__).resolve().parent.parent


def start_service(models_dir: Path, log_path: Path, **settings: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m service` on a free port with the committed models and the given RNNSERVE_* settings
    (by lower-case name), its output in `log_path`; its URL and process, once ready."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    # No drain unless a test asks for one: it would only make each stop take longer.
    environment |= {"RNNSERVE_PORT": str(port), "RNNSERVE_MODEL_DIR": str(models_dir)}
    environment |= {"RNNSERVE_DRAIN_S": "0"}
    environment |= {f"RNNSERVE_{name.upper()}": value for name, value in settings.items()}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO_ROOT, env=environment, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, process, log_path.read_text)
    return url, process
