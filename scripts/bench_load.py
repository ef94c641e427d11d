"""The benchmark's load runner: `hey` (or tritonclient, bench_triton.py) on each cell (one input form at
one concurrency), with the server's CPU, memory and batch sizes measured around it, repeats interleaved
across servers."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench_forms import Form
from bench_servers import Server, start, stop
from bench_triton import run_tritonclient
from local_server import http_get
from process_stats import process_tree, process_tree_cpu, process_tree_rss, read_proc
from prometheus_client.parser import text_string_to_metric_families

IDLE_CPU_LIMIT_PERCENT = 2.0  # above it, a server runs only during its own cells
SETTLE_S = 2.0  # after such a server is stopped, before the next one's cells


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
    batch_sizes: dict[str, float] | None = None  # model calls per batch-size bucket ("le" bound)
    cpu_us: float | None = None  # server CPU per answer, whole process tree
    rss_mb: float | None = None  # the largest process
    rss_total_mb: float | None = None  # every process of the server
    note: str = ""


def batch_metrics(url: str, model: str) -> dict[str, float] | None:
    """The `rnnserve_batch_size` histogram of `model` so far, from rnnserve's /metrics: "sum" (inputs),
    "count" (model calls) and each bucket's cumulative count under its bound ("1.0", ..., "+Inf");
    None when unreadable."""
    status, text = http_get(url + "/metrics")
    found = {}
    for family in text_string_to_metric_families(text) if status == 200 else []:
        if family.name != "rnnserve_batch_size":
            continue
        for sample in (s for s in family.samples if s.labels.get("model") == model):
            part = sample.name.removeprefix("rnnserve_batch_size_")
            if part in ("bucket", "sum", "count"):
                found[sample.labels["le"] if part == "bucket" else part] = sample.value
    return found if "sum" in found and "count" in found else None


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Model calls per bucket between two readings of `batch_metrics` (not cumulative)."""
    bounds = sorted((k for k in after if k not in ("sum", "count")), key=float)
    cumulative = [after[b] - before.get(b, 0.0) for b in bounds]
    return {b: c - p for b, c, p in zip(bounds, cumulative, [0.0, *cumulative[:-1]], strict=True)}


def run_hey(url: str, form: Form, body_file: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """One `hey -z` run, its summary parsed: total_s, p50_ms, p99_ms, statuses, errors, note."""
    command = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", form.content_type]
    for header in form.headers:
        command += ["-H", header]
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


def outcome(result: dict[str, Any]) -> tuple[int, float | None]:
    """What a `run_hey` (or `run_tritonclient`) run came to: its failures (responses other than 2xx, and
    transport errors) and its 2xx answers per second (None when its total time is unknown)."""
    statuses: Counter[int] = result["statuses"]
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    rate = ok / result["total_s"] if result.get("total_s") else None
    return statuses.total() - ok + result["errors"], rate


Cell_ = TypeVar("Cell_", bound=Hashable)


def interleaved(
    cells: Sequence[Cell_], rounds: int, measure: Callable[[Cell_], tuple[float, str]]
) -> dict[Cell_, list[float]]:
    """Each cell measured once a round for `rounds` rounds, every other round in reverse order, so that a
    slow minute of the machine costs them all: each cell's values. `measure` gives a cell's value and
    the line printed for it after "round N "."""
    values: dict[Cell_, list[float]] = {cell: [] for cell in cells}
    for round_ in range(rounds):
        for cell in cells if round_ % 2 == 0 else list(reversed(cells)):
            value, line = measure(cell)
            values[cell].append(value)
            print(f"round {round_ + 1} {line}", flush=True)
    return values


def measure_cell(
    server: Server, form: Form, body: Path, concurrency: int, repeat: int, args: argparse.Namespace
) -> Cell:
    """Warm up, then one measured run (`hey`, or tritonclient for its form) with the server's CPU, batches
    and memory around it."""
    cell = Cell(server.name, form.name, concurrency, repeat)
    if not server.running():
        cell.note = "the server is not running"
        return cell
    pid, run = server.pid, run_tritonclient if form.driver == "tritonclient" else run_hey
    run(server.url, form, body, concurrency, args.warmup)
    batches = batch_metrics(server.url, form.model) if server.metrics else None
    cpu = process_tree_cpu(pid)
    hey = run(server.url, form, body, concurrency, args.duration)
    cpu = process_tree_cpu(pid) - cpu
    after = batch_metrics(server.url, form.model) if batches else None
    statuses: Counter[int] = hey["statuses"]
    cell.errors, rate = outcome(hey)
    cell.requests = statuses.total()
    cell.p50_ms, cell.p99_ms = hey.get("p50_ms"), hey.get("p99_ms")
    failed = [f"HTTP {status} ×{n}" for status, n in sorted(statuses.items()) if not 200 <= status < 300]
    cell.note = ", ".join([*failed, hey["note"]] if hey["note"] else failed)
    if rate is not None:
        cell.req_s, cell.inputs_per_s = rate, rate * form.inputs
    if cell.requests:
        cell.cpu_us = cpu * 1e6 / cell.requests
    if batches and after and after["count"] > batches["count"]:
        cell.mean_batch = (after["sum"] - batches["sum"]) / (after["count"] - batches["count"])
        cell.batch_sizes = batch_sizes(batches, after)
    cell.rss_mb, cell.rss_total_mb = process_tree_rss(pid)
    if server.process and not server.running():
        cell.note += f" (the server exited with status {server.process.returncode})"
    return cell


def start_all(server_list: list[Server], logs: Path) -> list[Server]:
    """Start the available servers one after another; stop again those that burn CPU while idle."""
    for server in (s for s in server_list if not s.error):
        print(f"starting {server.name}", file=sys.stderr)
        if start(server, logs):
            tree = process_tree(server.pid)
            server.processes = len(tree)
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
    """For each repeat, each server in turn runs all its cells; each repeat starts one server further
    on, so that the first repeat's start-up and a stopped server's exit do not always fall on the cells
    of the same server."""
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        bodies = {name: Path(scratch) / name for name in forms}
        for name, form in forms.items():
            bodies[name].write_bytes(form.body)
        for repeat in range(args.repeats):
            first = repeat % len(live) if live else 0
            for server in live[first:] + live[:first]:
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
                    rate = "" if cell.req_s is None else f"{cell.req_s:,.0f}"
                    print(f"[{where}] {server.name}: {rate} req/s, {cell.errors} errors", file=sys.stderr)
                if server.on_demand:
                    stop(server)
                    time.sleep(SETTLE_S)
    return cells


def medians(cells: list[Cell]) -> list[Cell]:
    """One cell per (server, form, concurrency): medians over repeats, errors and batch sizes summed,
    RSS the largest."""
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
        histograms = [c.batch_sizes for c in group if c.batch_sizes]
        bounds = dict.fromkeys(b for h in histograms for b in h)
        cell.batch_sizes = {b: sum(h.get(b, 0.0) for h in histograms) for b in bounds} or None
        merged.append(cell)
    return merged
