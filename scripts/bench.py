"""Throughput, latency and server CPU of rnnserve beside its baselines, driven by `hey`.

    python scripts/bench.py            # every cell, 3 interleaved repeats (about 25 minutes)
    python scripts/bench.py --quick    # concurrency 1 and 64, one repeat, 2 s cells (about 3 minutes)

Starts each server on 127.0.0.1 (a free port each): rnnserve in several configurations, an empty
FastAPI endpoint (the HTTP floor), one ONNX Runtime call per request without batching, and LitServe
when it is installed. They start one after another and then idle; a server that burns CPU while idle
(LitServe's workers poll) is stopped and started again only for its own cells. For each repeat, each
server runs its cells in turn, so that runs of different servers interleave in time. A cell is one
input form at one concurrency: a warm-up, then `hey -z DURATION`. The report gives the median over
repeats and the goal ratios; compare ratios, not absolute numbers (the cores are shared). Inherited
RNNSERVE_* variables are dropped, so that each row runs the configuration its name says.

Writes OUT/bench.md, OUT/bench.json, OUT/bench.png and the servers' logs in OUT/logs/. The hidden
sub-mode `--serve KIND --port N` runs one of the baseline servers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response  # module-level: FastAPI resolves endpoint annotations here

REPO = Path(__file__).resolve().parent.parent
DIGIT_FORMS = ("json-pixels", "base64-image", "raw-image", "octet-stream", "64-images", "64-images-json")
CONCURRENCY, QUICK_CONCURRENCY = (1, 8, 64, 256), (1, 64)
ORT_BATCHES, ORT_FORECAST_BATCHES = (1, 8, 64, 256), (1, 64)
DEFAULT, BATCH_1, GRANIAN = "rnnserve", "rnnserve, max_batch_size 1", "rnnserve on granian"
WORKERS_ENGINE, WORKERS_INLINE = "rnnserve, 2 workers, shared engine", "rnnserve, 2 workers, independent"
ONE_WORKER = "rnnserve, 1 worker"
FLOOR, ONE_CALL, LITSERVE = "HTTP floor (empty FastAPI)", "one ORT call per request", "LitServe"
IDLE_CPU_LIMIT_PERCENT = 2.0  # above it, a server runs only during its own cells


# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class Form:
    """One way of asking: a route, a content type and a request body."""

    name: str
    route: str
    content_type: str
    body: bytes
    model: str  # the label of rnnserve's batch-size metric
    inputs: int = 1  # images (or series) in one request


def digit_image(rng: np.random.Generator) -> np.ndarray:
    """A 28×28 uint8 "1": a vertical bar, white on black."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 12:16] = rng.integers(128, 256, size=(20, 4))
    return image


def as_bytes(body: object) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def make_forms(seed: int = 0) -> dict[str, Form]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = digit_image(rng)
    png = io.BytesIO()
    Image.fromarray(image, mode="L").save(png, format="PNG")
    images = np.stack([digit_image(rng) for _ in range(64)])
    series = (np.sin(np.arange(256) / 8.0) + 0.1 * rng.normal(size=256)).round(4)
    json_body, octets = "application/json", "application/octet-stream"
    digit = {  # form -> (content type, body, images per request)
        "json-pixels": (json_body, {"pixels": image.tolist()}, 1),
        "base64-image": (json_body, {"image": base64.b64encode(png.getvalue()).decode()}, 1),
        "raw-image": ("image/png", png.getvalue(), 1),
        "octet-stream": (octets, image.tobytes(), 1),
        "64-images": (octets, images.tobytes(), 64),
        "64-images-json": (json_body, {"inputs": [{"pixels": i.tolist()} for i in images]}, 64),
    }
    forms = {
        name: Form(name, "/predict/digit", kind, as_bytes(body), "digit_lstm", count)
        for name, (kind, body, count) in digit.items()
    }
    forecast = {"series": series.tolist(), "horizon": 32}
    forms["forecast"] = Form("forecast", "/forecast", json_body, as_bytes(forecast), "sine_gru")
    return forms


# ---------------------------------------------------------------- ONNX Runtime and the baseline servers


def newest_model(name: str) -> Path:
    versions = [p for p in (REPO / "models" / name).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) / "model.onnx"


def ort_session(path: Path) -> Any:
    """An ONNX Runtime CPU session whose idle threads sleep instead of spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def digit_answer(probabilities: np.ndarray) -> dict[str, Any]:
    return {
        "digit": int(probabilities.argmax()),
        "probabilities": probabilities.astype(float).round(6).tolist(),
    }


def floor_app() -> FastAPI:
    """The HTTP floor: an endpoint that reads the body and answers a small JSON, nothing else."""
    app = FastAPI()

    @app.post("/predict/digit")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(b'{"digit":1}', media_type="application/json")

    return app


def one_call_app() -> FastAPI:
    """One session.run per request, on the event loop, without batching."""
    import orjson

    app, session = FastAPI(), ort_session(newest_model("digit_lstm"))

    @app.post("/predict/digit")
    async def predict(request: Request) -> Response:
        pixels = np.asarray(orjson.loads(await request.body())["pixels"], dtype=np.float32)
        (probabilities,) = session.run(["probabilities"], {"pixels": pixels.reshape(1, 28, 28)})
        return Response(orjson.dumps(digit_answer(probabilities[0])), media_type="application/json")

    return app


def litserve_api(model: str) -> Any:
    """A LitServe API on the same ONNX model, batching up to 64 inputs or 5 ms.

    LitServe pickles the API into its spawned worker, where a class local to this function could not
    be found by name: `__reduce__` rebuilds it through this (module-level) function instead. LitServe
    reads the annotations of `decode_request` and `encode_response` as the request and response
    schema, so those two stay unannotated."""
    import litserve as ls

    class DigitAPI(ls.LitAPI):
        def __reduce__(self) -> tuple[Any, ...]:
            return litserve_api, (model,), self.__dict__.copy()

        def setup(self, device: str) -> None:
            self.session = ort_session(Path(model))

        def decode_request(self, request):
            return np.asarray(request["pixels"], dtype=np.float32).reshape(28, 28)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(["probabilities"], {"pixels": x})[0]

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, output):
            return digit_answer(output)

    return DigitAPI(max_batch_size=64, batch_timeout=0.005, api_path="/predict/digit")


def serve(kind: str, port: int) -> None:
    """The `--serve` sub-mode: a baseline on the service's stack (uvicorn, httptools, uvloop)."""
    if kind == "litserve":
        import litserve as ls

        server = ls.LitServer(litserve_api(str(newest_model("digit_lstm"))), accelerator="cpu")
        server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
        return
    import uvicorn

    app = floor_app() if kind == "floor" else one_call_app()
    stack: dict[str, Any] = {
        "http": "httptools",
        "loop": "uvloop",
        "access_log": False,
        "log_level": "warning",
    }
    uvicorn.run(app, host="127.0.0.1", port=port, **stack)


# ---------------------------------------------------------------- servers and their processes


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

    def row(self) -> list[str]:
        status = "; ".join(filter(None, [self.error, *self.notes])) or "measured"
        return [self.name, status, fmt(self.idle_cpu_percent), yes_no(self.torch_loaded)]


def servers(levels: tuple[int, ...]) -> list[Server]:
    python = sys.executable
    service = [python, "-m", "service"]
    bench = [python, str(Path(__file__).resolve()), "--port", "{port}", "--serve"]
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """The status and text of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, http.client.HTTPException):
        return 0, ""


def start(server: Server, logs: Path, timeout_s: float = 180) -> bool:
    """Start `server` and wait until it is ready; on failure, `server.error` says why."""
    server.port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")} | server.env
    env |= {"RNNSERVE_HOST": "127.0.0.1", "RNNSERVE_PORT": str(server.port), "RNNSERVE_LOG_LEVEL": "WARNING"}
    log = logs / (re.sub(r"\W+", "-", server.name).strip("-") + ".log")
    argv = [arg.replace("{port}", str(server.port)) for arg in server.argv]
    with log.open("ab") as sink:
        # A session (and process group) of its own, so that stop() can end exactly its processes.
        server.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-2:]
            server.error = f"exited with status {server.process.returncode}: {' / '.join(tail)[-300:]}"
            server.process = None
            return False
        if http_get(server.url + server.ready_path, timeout=5)[0] == 200:
            return True
        time.sleep(0.3)
    server.error = f"not ready within {timeout_s:.0f} s (see {log})"
    stop(server)
    return False


def stop(server: Server) -> None:
    """SIGTERM and wait; then SIGKILL whatever is left of its process group."""
    if server.process is None:
        return
    server.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.process = None


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime in clock ticks), for every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def process_tree(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """`pid` and all its descendants."""
    table = proc_table() if table is None else table
    tree = [pid]
    for parent in tree:  # grows while it is walked
        tree += [child for child, (ppid, _) in table.items() if ppid == parent]
    return tree


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and all its descendants."""
    table = proc_table()
    return sum(table[p][1] for p in process_tree(pid, table) if p in table) / os.sysconf("SC_CLK_TCK")


def read_proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def process_tree_rss(pid: int) -> tuple[float, float]:
    """Resident memory in MB of the largest process among `pid` and its descendants, and of them all."""
    sizes = [
        int(line.split()[1]) / 1024
        for p in process_tree(pid)
        for line in read_proc(p, "status").splitlines()
        if line.startswith("VmRSS:")
    ]
    return max(sizes, default=0.0), sum(sizes)


def batch_totals(url: str, model: str) -> tuple[float, float] | None:
    """(inputs, model calls) so far for `model`, from rnnserve's /metrics; None when unreadable."""
    status, text = http_get(url + "/metrics")
    found = {}
    for line in text.splitlines() if status == 200 else []:
        for part in ("sum", "count"):
            if line.startswith(f"rnnserve_batch_size_{part}{{") and f'model="{model}"' in line:
                found[part] = float(line.rsplit(" ", 1)[1])
    return (found["sum"], found["count"]) if len(found) == 2 else None


# ---------------------------------------------------------------- measuring


@dataclass
class Cell:
    server: str
    form: str
    concurrency: int
    repeat: int  # in medians: how many repeats were merged
    req_s: float | None = None  # 2xx answers per second
    inputs_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0  # non-2xx answers + hey's error lines
    requests: int = 0  # answers of any status
    mean_batch: float | None = None
    cpu_us: float | None = None  # server CPU per answer, whole process tree
    rss_mb: float | None = None  # the largest process
    rss_total_mb: float | None = None  # every process of the server
    note: str = ""

    def row(self) -> list[str]:
        speed = [fmt(self.req_s, 0), fmt(self.inputs_per_s, 0), fmt(self.p50_ms, 2), fmt(self.p99_ms, 2)]
        memory = f"{fmt(self.rss_mb, 0)} / {fmt(self.rss_total_mb, 0)}"
        cost = [str(self.errors), fmt(self.mean_batch), fmt(self.cpu_us, 0), memory]
        return [self.server, self.form, str(self.concurrency), *speed, *cost, self.note]


def run_hey(url: str, form: Form, body_file: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """One `hey -z` run, its summary parsed: total_s, p50_ms, p99_ms, statuses, errors, note."""
    command = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", form.content_type]
    command += ["-D", str(body_file), url + form.route]
    result: dict[str, Any] = {"statuses": Counter(), "errors": 0, "note": ""}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        return result | {"errors": 1, "note": "hey did not finish"}
    text, _, errors = done.stdout.partition("Error distribution:")
    if match := re.search(r"Total:\s+([\d.]+) secs", text):
        result["total_s"] = float(match[1])
    for percent in ("50", "99"):
        if match := re.search(rf"^\s+{percent}% in ([\d.]+) secs", text, re.M):
            result[f"p{percent}_ms"] = float(match[1]) * 1000
    for status, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text):
        result["statuses"][int(status)] += int(count)
    if lines := re.findall(r"^\s+\[(\d+)\]\s+(.*)$", errors, re.M):
        result["errors"] = sum(int(count) for count, _ in lines)
        result["note"] = re.sub(r'^\w+ "[^"]*": ', "", lines[0][1])[:100]  # less the method and URL
    if done.returncode != 0 or not text.strip():
        result["errors"] += 1
        result["note"] = (done.stderr.strip().splitlines() or ["hey failed"])[-1][:100]
    return result


def measure_cell(
    server: Server, form: Form, body: Path, concurrency: int, repeat: int, args: argparse.Namespace
) -> Cell:
    """Warm up, then one measured `hey` run with the server's CPU, batches and memory around it."""
    cell = Cell(server.name, form.name, concurrency, repeat)
    if not server.running():
        cell.note = "the server is not running"
        return cell
    pid = server.pid
    run_hey(server.url, form, body, concurrency, args.warmup)
    batches = batch_totals(server.url, form.model) if server.metrics else None
    cpu = process_tree_cpu(pid)
    hey = run_hey(server.url, form, body, concurrency, args.duration)
    cpu = process_tree_cpu(pid) - cpu
    after = batch_totals(server.url, form.model) if batches else None
    statuses: Counter[int] = hey["statuses"]
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    cell.requests, cell.errors = statuses.total(), statuses.total() - ok + hey["errors"]
    cell.p50_ms, cell.p99_ms = hey.get("p50_ms"), hey.get("p99_ms")
    failed = [f"HTTP {status} ×{n}" for status, n in sorted(statuses.items()) if not 200 <= status < 300]
    cell.note = ", ".join([*failed, hey["note"]] if hey["note"] else failed)
    if hey.get("total_s"):
        cell.req_s = ok / hey["total_s"]
        cell.inputs_per_s = cell.req_s * form.inputs
    if cell.requests:
        cell.cpu_us = cpu * 1e6 / cell.requests
    if batches and after and after[1] > batches[1]:
        cell.mean_batch = (after[0] - batches[0]) / (after[1] - batches[1])
    cell.rss_mb, cell.rss_total_mb = process_tree_rss(pid)
    if server.process and not server.running():
        cell.note += f" (the server exited with status {server.process.returncode})"
    return cell


def runs_per_second(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> float:
    for _ in range(3):
        session.run(None, feeds)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        session.run(None, feeds)
        runs += 1
    return runs / elapsed


def ort_alone(seconds: float = 1.0) -> list[dict[str, Any]]:
    """Inputs per second of ONNX Runtime itself, in this process, at a few batch sizes."""
    rng, rows = np.random.default_rng(0), []
    digits, forecaster = ort_session(newest_model("digit_lstm")), ort_session(newest_model("sine_gru"))
    for batch in ORT_BATCHES:
        pixels = rng.integers(0, 256, size=(batch, 28, 28)).astype(np.float32)
        rate = runs_per_second(digits, {"pixels": pixels}, seconds)
        rows.append({"model": "digit_lstm", "batch": batch, "inputs_per_s": rate * batch})
    for batch in ORT_FORECAST_BATCHES:
        series = rng.normal(size=(batch, 256)).astype(np.float32)
        rate = runs_per_second(forecaster, {"series": series, "mask": np.ones_like(series)}, seconds)
        rows.append({"model": "sine_gru", "batch": batch, "inputs_per_s": rate * batch})
    return rows


def start_all(server_list: list[Server], logs: Path) -> list[Server]:
    """Start the available servers one after another; stop again those that burn CPU while idle."""
    for server in (s for s in server_list if not s.error):
        print(f"starting {server.name}", file=sys.stderr)
        if start(server, logs):
            tree = process_tree(server.pid)
            server.torch_loaded = any("libtorch" in read_proc(pid, "maps") for pid in tree)
            if len(tree) < server.min_processes:
                server.notes.append(f"{len(tree)} process: the workers setting seems to have no effect")
    live = [s for s in server_list if s.running()]
    before = {s.name: process_tree_cpu(s.pid) for s in live}
    time.sleep(2)
    for server in live:
        server.idle_cpu_percent = (process_tree_cpu(server.pid) - before[server.name]) * 100 / 2
        if server.idle_cpu_percent > IDLE_CPU_LIMIT_PERCENT:
            server.on_demand = True
            server.notes.append(f"{server.idle_cpu_percent:.0f} % CPU when idle: started only for its cells")
            stop(server)
    return live


def measure_all(args: argparse.Namespace, live: list[Server], forms: dict[str, Form]) -> list[Cell]:
    """For each repeat, each server in turn runs all its cells."""
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        bodies = {name: Path(scratch) / name for name in forms}
        for name, form in forms.items():
            bodies[name].write_bytes(form.body)
        for repeat in range(args.repeats):
            for server in live:
                starts_left = 2  # its start, if it is stopped, and one restart after it died or hung
                for name, concurrency in server.cells():
                    if not server.running() and starts_left:
                        starts_left -= 1
                        stop(server)  # what is left of a process that died
                        start(server, args.out / "logs")
                    cell = measure_cell(server, forms[name], bodies[name], concurrency, repeat, args)
                    cells.append(cell)
                    where = f"repeat {repeat + 1}, {name} at c={concurrency}"
                    if server.process and not server.running():
                        server.notes.append(f"{where}: exited with status {server.process.returncode}")
                    elif cell.requests == 0 and server.running():
                        server.notes.append(f"{where}: no answer at all; stopped")
                        stop(server)
                    progress = f"{fmt(cell.req_s, 0)} req/s, {cell.errors} errors"
                    print(f"[{where}] {server.name}: {progress}", file=sys.stderr)
                if server.on_demand:
                    stop(server)
    return cells


def medians(cells: list[Cell]) -> list[Cell]:
    """One cell per (server, form, concurrency): medians over repeats, errors summed, RSS the largest."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.server, cell.form, cell.concurrency), []).append(cell)
    merged = []
    for (server, form, concurrency), group in groups.items():
        cell = Cell(server, form, concurrency, repeat=len(group))
        for name in ("req_s", "inputs_per_s", "p50_ms", "p99_ms", "mean_batch", "cpu_us"):
            values = [getattr(c, name) for c in group if getattr(c, name) is not None]
            setattr(cell, name, statistics.median(values) if values else None)
        cell.errors, cell.requests = sum(c.errors for c in group), sum(c.requests for c in group)
        cell.rss_mb = max((c.rss_mb for c in group if c.rss_mb is not None), default=None)
        cell.rss_total_mb = max((c.rss_total_mb for c in group if c.rss_total_mb is not None), default=None)
        cell.note = "; ".join(sorted({c.note for c in group if c.note}))
        merged.append(cell)
    return merged


# ---------------------------------------------------------------- report


@dataclass
class Ratio:
    name: str
    value: float | None
    goal: str  # ">= 0.45", "<= 300", or "" for none
    unit: str = ""
    met: bool | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.value is not None and self.goal:
            sign, bound = self.goal.split()
            self.met = self.value >= float(bound) if sign == ">=" else self.value <= float(bound)

    def row(self) -> list[str]:
        value = "n/a" if self.value is None else f"{self.value:,.2f}{self.unit}"
        return [self.name, value, self.goal.replace(">=", "≥").replace("<=", "≤") or "—", yes_no(self.met)]


def ratios(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server]) -> list[Ratio]:
    """The goal ratios, from the medians; a ratio whose cells are missing is None."""
    at = {(c.server, c.form, c.concurrency): c for c in cells}

    def get(
        server: str, form: str = "json-pixels", concurrency: int = 64, name: str = "req_s"
    ) -> float | None:
        cell = at.get((server, form, concurrency))
        return None if cell is None else getattr(cell, name)

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    ours = get(DEFAULT)
    cpu = div(get(DEFAULT, name="cpu_us"), get(FLOOR, name="cpu_us"))
    p50 = div(get(DEFAULT, concurrency=1, name="p50_ms"), get(ONE_CALL, concurrency=1, name="p50_ms"))
    images = [v for c in (8, 64) if (v := get(DEFAULT, "64-images", c, "inputs_per_s")) is not None]
    ort64 = next((r["inputs_per_s"] for r in ort if r["model"] == "digit_lstm" and r["batch"] == 64), None)
    forecast = div(get(DEFAULT, "forecast"), get(BATCH_1, "forecast"))
    rss = max((c.rss_mb for c in cells if c.server == DEFAULT and c.rss_mb is not None), default=None)
    torch = next(s.torch_loaded for s in server_list if s.name == DEFAULT)
    return [
        Ratio("json-pixels c=64 req/s ÷ HTTP floor's", div(ours, get(FLOOR)), ">= 0.45"),
        Ratio("json-pixels c=64 req/s ÷ one ORT call per request's", div(ours, get(ONE_CALL)), ">= 2"),
        Ratio("json-pixels c=64 req/s ÷ LitServe's", div(ours, get(LITSERVE)), ">= 3"),
        Ratio("json-pixels c=64 CPU µs/request ÷ HTTP floor's", cpu, "<= 2.5"),
        Ratio("json-pixels c=1 p50 ÷ one ORT call per request's", p50, "<= 1.15"),
        Ratio(
            "64-images images/s (best of c=8, 64) ÷ ORT alone's at batch 64",
            div(max(images, default=None), ort64),
            ">= 0.5",
        ),
        Ratio("forecast c=64 req/s ÷ max_batch_size 1's", forecast, ">= 2"),
        Ratio("RSS of the default server's largest process, largest over cells", rss, "<= 300", " MB"),
        Ratio(
            "torch loaded in the default server (1 = yes)", None if torch is None else float(torch), "<= 0"
        ),
        Ratio("default settings ÷ 1 worker (json-pixels c=64)", div(ours, get(ONE_WORKER)), ""),
        Ratio(
            "2 workers, shared engine ÷ 1 worker (json-pixels c=64)",
            div(get(WORKERS_ENGINE), get(ONE_WORKER)),
            "",
        ),
        Ratio(
            "2 workers, independent ÷ 1 worker (json-pixels c=64)",
            div(get(WORKERS_INLINE), get(ONE_WORKER)),
            "",
        ),
        Ratio("granian ÷ uvicorn, 1 worker each (json-pixels c=64)", div(get(GRANIAN), get(ONE_WORKER)), ""),
    ]


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def md_table(title: str, columns: str, rows: list[list[Any]]) -> list[str]:
    """A Markdown section; `columns` is "a|b:|c", a trailing ":" right-aligns the column."""
    names = columns.split("|")
    align = ["---:" if name.endswith(":") else "---" for name in names]
    head = [f"| {' | '.join(name.rstrip(':') for name in names)} |", f"|{'|'.join(align)}|"]
    return [f"## {title}", "", *head, *(f"| {' | '.join(map(str, row))} |" for row in rows), ""]


def yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def tables(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server], rows: list[Ratio]) -> str:
    ort_rows = [[r["model"], r["batch"], fmt(r["inputs_per_s"], 0)] for r in ort]
    columns = "server|form|c:|req/s:|inputs/s:|p50 ms:|p99 ms:|errors:|mean batch:|CPU µs/req:"
    columns += "|RSS MB (largest process / all):|note"
    return "\n".join(
        md_table("Servers", "server|status|idle CPU %:|torch loaded", [s.row() for s in server_list])
        + md_table("ONNX Runtime alone, in the bench process", "model|batch:|inputs/s:", ort_rows)
        + md_table(
            "Cells: median over repeats (errors summed, RSS the largest)", columns, [c.row() for c in cells]
        )
        + md_table(
            "Ratios (the default rnnserve unless named)", "ratio|measured:|goal|met", [r.row() for r in rows]
        )
    )


def header(args: argparse.Namespace, levels: tuple[int, ...]) -> str:
    import onnxruntime
    import uvicorn

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    versions = f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    versions += f", uvicorn {uvicorn.__version__}"
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    return (
        f"# rnnserve benchmark\n\n- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}\n"
        f"- machine: {cpu or platform.processor()}, {os.cpu_count()} cores; {versions}\n"
        f"- command: `{command}`\n"
        f"- each cell: {args.warmup:g} s warm-up, then `hey -z {args.duration:g}s`; concurrency "
        f"{', '.join(map(str, levels))}; {args.repeats} repeat(s), interleaved across servers\n"
        "- req/s counts 2xx answers; CPU is the server's whole process tree, per answer; mean batch is "
        "from the server's /metrics (with several workers, from whichever worker answered /metrics)\n\n"
    )


def plot(cells: list[Cell], path: Path) -> None:
    """req/s and p99 against concurrency: a colour per server, a marker and dash per input form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(16, 6))
    servers_seen = list(dict.fromkeys(c.server for c in cells))
    forms_seen = list(dict.fromkeys(c.form for c in cells))
    lines: dict[tuple[str, str], list[Cell]] = {}
    for cell in sorted(cells, key=lambda c: c.concurrency):
        lines.setdefault((cell.server, cell.form), []).append(cell)
    for (server, form), line in lines.items():
        k = forms_seen.index(form)
        style = {
            "color": f"C{servers_seen.index(server)}",
            "marker": "os^Dvpx*"[k % 8],
            "linestyle": "-:"[k % 2],
        }
        style["label"] = f"{server} · {form}"
        xs = [c.concurrency for c in line]
        throughput.plot(xs, [c.req_s or 0 for c in line], **style)
        tail.plot(xs, [c.p99_ms or float("nan") for c in line], **style)
    levels = sorted({c.concurrency for c in cells})
    for axes, title in ((throughput, "requests/s (2xx answers)"), (tail, "p99 latency (ms)")):
        axes.set(xscale="log", yscale="log" if axes is tail else "linear", xlabel="concurrency", title=title)
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.grid(True, alpha=0.3)
    tail.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path, head: str, body: str, data: dict[str, Any], cells: list[Cell]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(head + body)
    (out / "bench.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    plot(cells, out / "bench.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 64, 1 repeat, 2 s cells")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench", help="the report's folder")
    parser.add_argument("--duration", type=float, help="seconds of `hey` per cell (default 5; --quick 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured `hey` before each")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3; --quick 1)")
    parser.add_argument("--serve", choices=["floor", "one-call", "litserve"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    levels = QUICK_CONCURRENCY if args.quick else CONCURRENCY
    server_list, forms = servers(levels), make_forms()
    for server in (s for s in server_list if s.error):
        print(f"{server.name}: {server.error}", file=sys.stderr)
    count = sum(len(s.cells()) for s in server_list if not s.error) * args.repeats
    minutes = count * (args.duration + args.warmup + 0.5) / 60
    print(f"{count} cells: about {minutes:.0f} minutes; timing ONNX Runtime alone first", file=sys.stderr)
    ort = ort_alone()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    for old_log in (args.out / "logs").glob("*.log"):
        old_log.unlink()
    live = start_all(server_list, args.out / "logs")
    try:
        cells = measure_all(args, live, forms)
    finally:
        for server in live:
            stop(server)
    summary, head = medians(cells), header(args, levels)
    rows = ratios(summary, ort, server_list)
    body = tables(summary, ort, server_list, rows)
    data = {
        "header": head,
        "servers": [{k: v for k, v in asdict(s).items() if k != "process"} for s in server_list],
        "ort_alone": ort,
        "cells": [asdict(c) for c in cells],
        "medians": [asdict(c) for c in summary],
        "ratios": [asdict(r) for r in rows],
    }
    write_report(args.out, head, body, data, summary)
    print(body)
    print(f"wrote {args.out}/bench.md, bench.json and bench.png", file=sys.stderr)


if __name__ == "__main__":
    main()
