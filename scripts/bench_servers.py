"""The servers under test: rnnserve in several configurations and the baselines (or, for a GPU machine,
rnnserve on CUDA with each backend), each a command that runs on its own free port, started and stopped
with all its processes; what each rnnserve said it serves (GET /models) is kept beside it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import local_server
from bench_forms import DIGIT_FORMS, GPU_FORMS, INT8_FORMS, MANY_FORMS, REST_VS_V2, V2_FORMS, WORKER_FORMS
from local_server import ServerNotReady, free_port, http_get, service_environment, start_server

BENCH = Path(__file__).resolve().parent / "bench.py"  # its hidden `--serve KIND` runs a baseline
DEFAULT, BATCH_1, GRANIAN = "rnnserve", "rnnserve, max_batch_size 1", "rnnserve on granian"
WORKERS_ENGINE, WORKERS_INLINE = "rnnserve, 2 workers, shared engine", "rnnserve, 2 workers, independent"
ONE_WORKER = "rnnserve, 1 worker"
INT8, FP32 = "rnnserve, RNNSERVE_PRECISION=int8", "rnnserve, RNNSERVE_PRECISION=fp32"
WITHIN_QUEUE = 8
"""A concurrency at which 64-image requests fit the queue (512 images in flight, of 1,024 a worker): the
forms of 64 images a request are measured there too, whatever the run's levels, so that their ratios
compare speeds rather than how many requests each server refused (at c=64, most get 429)."""
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
    scratch: Path | None = None  # its TMPDIR while it runs, removed when it stops
    error: str = ""
    notes: list[str] = field(default_factory=list)
    on_demand: bool = False  # stopped between its turns
    idle_cpu_percent: float | None = None
    torch_loaded: bool | None = None
    processes: int | None = None  # in its process tree, once started
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /models: name -> what serves it

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
    every, int8_forms = (
        at_levels((*DIGIT_FORMS, *V2_FORMS, "forecast"), levels),
        at_levels(INT8_FORMS, levels),
    )
    usual, pixels = {"json-pixels": levels, "forecast": levels}, {"json-pixels": levels}
    many = at_levels(("64-images",), levels)
    two_workers = {"RNNSERVE_WORKERS": "2"}
    found = [
        Server(DEFAULT, service, {}, every),
        Server(BATCH_1, service, {"RNNSERVE_MAX_BATCH_SIZE": "1"}, usual | many),
        Server(ONE_WORKER, service, {"RNNSERVE_WORKERS": "1"}, usual | many),
        Server(INT8, service, {"RNNSERVE_PRECISION": "int8"}, int8_forms),
        Server(FP32, service, {"RNNSERVE_PRECISION": "fp32"}, int8_forms),
        Server(WORKERS_ENGINE, service, two_workers | {"RNNSERVE_ENGINE": "process"}, usual, min_processes=2),
        Server(WORKERS_INLINE, service, two_workers | {"RNNSERVE_ENGINE": "inline"}, pixels, min_processes=2),
        Server(GRANIAN, granian, {}, usual, requires="granian"),
        Server(FLOOR, [*bench, "floor"], {}, pixels, "/docs", metrics=False),
        Server(ONE_CALL, [*bench, "one-call"], {}, pixels, "/docs", metrics=False),
        Server(LITSERVE, [*bench, "litserve"], {}, pixels, "/health", metrics=False, requires="litserve"),
    ]
    return installed(found)


def at_levels(forms: tuple[str, ...], levels: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each of `forms` at `levels`, and those of many images a request at WITHIN_QUEUE too."""
    within = tuple(sorted({*levels, WITHIN_QUEUE}))
    return {form: within if form in MANY_FORMS else levels for form in forms}


def default_threads() -> int:
    """The intra-op threads of a model call in the default configuration on this CPU host: its workers
    each run their own models and share the cores."""
    from service.config import Settings

    return Settings(workers=0, threads=0).worker_threads()


def gpu_servers(levels: tuple[int, ...], device: str) -> list[Server]:
    """rnnserve in its default configuration on `device` (cuda; cpu for a dry run), on ONNX Runtime and on
    TorchScript, with the forms of GPU_FORMS at `levels`."""
    service, forms = [sys.executable, "-m", "service"], dict.fromkeys(GPU_FORMS, levels)
    backends: list[tuple[dict[str, str], str]] = [({}, ""), ({"RNNSERVE_BACKEND": "torchscript"}, "torch")]
    found = []
    for backend, requires in backends:
        env = backend | {"RNNSERVE_DEVICE": device}
        name = "rnnserve, " + " ".join(f"{k}={v}" for k, v in env.items())
        found.append(Server(name, service, env, forms, requires=requires))
    return installed(found)


def installed(found: list[Server]) -> list[Server]:
    """`found`, with `error` set on each server whose optional module is not installed."""
    for server in found:
        if server.requires and find_spec(server.requires) is None:
            server.error = f"not installed (pip install {server.requires} to include it)"
    return found


PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "v2": {DEFAULT: (*dict.fromkeys(REST_VS_V2.values()), *V2_FORMS)},
    "int8": {INT8: INT8_FORMS, FP32: INT8_FORMS},
    "workers": dict.fromkeys((ONE_WORKER, DEFAULT, WORKERS_ENGINE, WORKERS_INLINE), WORKER_FORMS),
    "overhead": dict.fromkeys((DEFAULT, FLOOR), ("json-pixels",)),
}
"""What `--only PART` measures: the servers of one comparison, each with the forms it needs."""


def select(server_list: list[Server], parts: list[str]) -> list[Server]:
    """The servers that `parts` (keys of PARTS) name, each with only the forms they name."""
    wanted: dict[str, set[str]] = {}
    for part in parts:
        for name, forms in PARTS[part].items():
            wanted.setdefault(name, set()).update(forms)
    chosen = [server for server in server_list if server.name in wanted]
    for server in chosen:
        server.forms = {form: levels for form, levels in server.forms.items() if form in wanted[server.name]}
    return chosen


def served_models(url: str) -> dict[str, dict[str, Any]]:
    """What rnnserve at `url` says of each model it serves (GET /models): version, backend, device,
    execution provider, precision and why."""
    status, text = http_get(url + "/models")
    if status != 200:
        return {}
    keys = ("version", "backend", "device", "execution_provider", "threads", "precision", "precision_reason")
    return {m["name"]: {k: m.get(k) for k in keys} for m in json.loads(text).get("models", [])}


def start(server: Server, logs: Path, timeout_s: float = 180) -> bool:
    """Start `server` and wait until it is ready; on failure, `server.error` says why.

    Inherited RNNSERVE_* variables are dropped, so that it runs the configuration its name says; its
    output is appended to its log in `logs`."""
    server.port = free_port()
    # No drain after SIGTERM: nothing balances load here, and each stop would wait for it.
    env = service_environment(server.port, {"log_level": "WARNING", "drain_s": "0"}) | server.env
    # What it leaves in its temporary folder goes when it stops (LitServe's multiprocessing manager
    # leaves a /tmp/pymp-* folder behind on SIGTERM).
    server.scratch = Path(tempfile.mkdtemp(prefix="rnnserve-bench-"))
    env["TMPDIR"] = str(server.scratch)
    log = logs / (re.sub(r"\W+", "-", server.name).strip("-") + ".log")
    argv = [arg.replace("{port}", str(server.port)) for arg in server.argv]
    try:
        # A process group of its own, so that stop() can end exactly its processes.
        _, server.process = start_server(
            argv,
            server.port,
            env=env,
            log_path=log,
            append_log=True,
            ready_path=server.ready_path,
            timeout_s=timeout_s,
            own_group=True,
        )
    except ServerNotReady as exc:
        if exc.returncode is None:
            server.error = f"not ready within {timeout_s:.0f} s (see {log})"
        else:
            tail = exc.output.strip().splitlines()[-2:]
            server.error = f"exited with status {exc.returncode}: {' / '.join(tail)[-300:]}"
        server.process = None
        _remove_scratch(server)
        return False
    if server.metrics:
        server.models = served_models(server.url)
    return True


def stop(server: Server) -> None:
    """SIGTERM and wait; then SIGKILL whatever is left of its process group."""
    if server.process is not None:
        local_server.stop(server.process, timeout_s=30, process_group=True)
        server.process = None
    _remove_scratch(server)


def _remove_scratch(server: Server) -> None:
    if server.scratch is not None:
        shutil.rmtree(server.scratch, ignore_errors=True)
        server.scratch = None
