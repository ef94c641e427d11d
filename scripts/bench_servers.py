"""The servers under test: rnnserve in several configurations and the baselines, each a command that
runs on its own free port, started and stopped with all its processes."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import local_server
from bench_forms import DIGIT_FORMS
from local_server import ServerNotReady, free_port, service_environment, start_server

BENCH = Path(__file__).resolve().parent / "bench.py"  # its hidden `--serve KIND` runs a baseline
DEFAULT, BATCH_1, GRANIAN = "rnnserve", "rnnserve, max_batch_size 1", "rnnserve on granian"
WORKERS_ENGINE, WORKERS_INLINE = "rnnserve, 2 workers, shared engine", "rnnserve, 2 workers, independent"
ONE_WORKER = "rnnserve, 1 worker"
FLOOR, ONE_CALL, LITSERVE = "HTTP floor (empty FastAPI)", "one ORT call per request", "LitServe"


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" is replaced by the port
    env: dict[str, str]
    forms: dict[str, tuple[int, ...]]  # form -> concurrency levels
    ready_path: str = "/health/ready"  # ready once it answers 200
    metrics: bool = True  # serves rnnserve's /metrics
    min_processes: int = 1
    requires: str = ""  # a module it needs, when that is optional
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)
    on_demand: bool = False  # stopped between its turns
    idle_cpu_percent: float | None = None
    torch_loaded: bool | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cells(self) -> list[tuple[str, int]]:
        return [(form, concurrency) for form, levels in self.forms.items() for concurrency in levels]


def servers(levels: tuple[int, ...]) -> list[Server]:
    """Every server of the benchmark, each with its forms at `levels`; `error` set on those not installed."""
    python = sys.executable
    service = [python, "-m", "service"]
    bench = [python, str(BENCH), "--port", "{port}", "--serve"]
    granian = [python, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    granian += ["--port", "{port}", "--workers", "1", "--log-level", "warning", "service.app:create_app"]
    every = dict.fromkeys((*DIGIT_FORMS, "forecast"), levels)
    usual, pixels = {"json-pixels": levels, "forecast": levels}, {"json-pixels": levels}
    two_workers = {"RNNSERVE_WORKERS": "2"}
    found = [
        Server(DEFAULT, service, {}, every),
        Server(BATCH_1, service, {"RNNSERVE_MAX_BATCH_SIZE": "1"}, usual | {"64-images": levels}),
        Server(ONE_WORKER, service, {"RNNSERVE_WORKERS": "1"}, usual | {"64-images": levels}),
        Server(WORKERS_ENGINE, service, two_workers | {"RNNSERVE_ENGINE": "process"}, usual, min_processes=2),
        Server(WORKERS_INLINE, service, two_workers | {"RNNSERVE_ENGINE": "inline"}, pixels, min_processes=2),
        Server(GRANIAN, granian, {}, usual, requires="granian"),
        Server(FLOOR, [*bench, "floor"], {}, pixels, "/docs", metrics=False),
        Server(ONE_CALL, [*bench, "one-call"], {}, pixels, "/docs", metrics=False),
        Server(LITSERVE, [*bench, "litserve"], {}, pixels, "/health", metrics=False, requires="litserve"),
    ]
    for server in found:
        if server.requires and find_spec(server.requires) is None:
            server.error = f"not installed (pip install {server.requires} to include it)"
    return found


def start(server: Server, logs: Path, timeout_s: float = 180) -> bool:
    """Start `server` and wait until it is ready; on failure, `server.error` says why.

    Inherited RNNSERVE_* variables are dropped, so that it runs the configuration its name says; its
    output is appended to its log in `logs`."""
    server.port = free_port()
    env = service_environment(server.port, {"log_level": "WARNING"}) | server.env
    log = logs / (re.sub(r"\W+", "-", server.name).strip("-") + ".log")
    argv = [arg.replace("{port}", str(server.port)) for arg in server.argv]
    try:
        # A session (and process group) of its own, so that stop() can end exactly its processes.
        _, server.process = start_server(
            argv,
            server.port,
            env=env,
            log_path=log,
            append_log=True,
            ready_path=server.ready_path,
            timeout_s=timeout_s,
            new_session=True,
        )
    except ServerNotReady as exc:
        if exc.returncode is None:
            server.error = f"not ready within {timeout_s:.0f} s (see {log})"
        else:
            tail = exc.output.strip().splitlines()[-2:]
            server.error = f"exited with status {exc.returncode}: {' / '.join(tail)[-300:]}"
        server.process = None
        return False
    return True


def stop(server: Server) -> None:
    """SIGTERM and wait; then SIGKILL whatever is left of its process group."""
    if server.process is None:
        return
    local_server.stop(server.process, timeout_s=30, process_group=True)
    server.process = None
