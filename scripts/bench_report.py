"""The benchmark's report: the goal ratios, Markdown tables (bench_tables.py), a header on the run, and
the plot, written into OUT/bench.md, OUT/bench.json and OUT/bench.png."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_baselines import one_per_core
from bench_load import Cell
from bench_servers import (
    BATCH_1,
    DEFAULT,
    FLOOR,
    FP32,
    GRANIAN,
    INT8,
    LITSERVE,
    ONE_CALL,
    ONE_WORKER,
    WITHIN_QUEUE,
    WORKERS_ENGINE,
    WORKERS_INLINE,
    Server,
)
from bench_tables import batch_sizes, fmt, int8_vs_float, md_table, rest_vs_v2, workers, yes_no

BEFORE_INT8 = 0.67
"""64-image requests' images/s over float ONNX Runtime alone's at batch 64, before the int8 graphs: the
best of the measurements 0.58–0.67. Serving in int8 is to double it."""


@dataclass
class Ratio:
    name: str
    value: float | None
    goal: str  # ">= 0.55", "<= 300", or "" for none
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
    images = [rate for c, rate in answered_all(at, DEFAULT, "64-images").items() if c in (WITHIN_QUEUE, 64)]
    digits = (r for r in one_per_core(ort) if r["model"] == "digit_lstm" and r["precision"] == "fp32")
    ort64 = next((r["inputs_per_s"] for r in digits if r["batch"] == 64), None)
    int8_images = max(answered_all(at, INT8, "64-images").values(), default=None)
    forecast = div(get(DEFAULT, "forecast"), get(BATCH_1, "forecast"))
    rss = max((c.rss_mb for c in cells if c.server == DEFAULT and c.rss_mb is not None), default=None)
    torch = next((s.torch_loaded for s in server_list if s.name == DEFAULT), None)
    pixels64 = at.get((DEFAULT, "json-pixels", 64)), at.get((FLOOR, "json-pixels", 64))
    beyond = cpu_beyond_floor_and_model(*pixels64, ort, server_list)
    return [
        Ratio("json-pixels c=64 req/s ÷ HTTP floor's", div(ours, get(FLOOR)), ">= 0.55"),
        Ratio("json-pixels c=64 req/s ÷ one ORT call per request's", div(ours, get(ONE_CALL)), ">= 3"),
        Ratio("json-pixels c=64 req/s ÷ LitServe's", div(ours, get(LITSERVE)), ">= 4"),
        Ratio("json-pixels c=64 CPU µs/request ÷ HTTP floor's", cpu, ""),
        Ratio(
            "json-pixels c=64 CPU µs/request beyond the floor's and the model's ÷ the floor's",
            beyond,
            "<= 0.5",
        ),
        Ratio("json-pixels c=1 p50 ÷ one ORT call per request's", p50, "<= 1.15"),
        Ratio(
            "64-images images/s (best of c=8, 64 with no refusals) ÷ ORT alone's at batch 64",
            div(max(images, default=None), ort64),
            ">= 0.5",
        ),
        Ratio(
            "64-images images/s in int8 (RNNSERVE_PRECISION=int8, best c with no refusals) ÷ float ORT "
            f"alone's at batch 64 (2× the {BEFORE_INT8} of float, before int8)",
            div(int8_images, ort64),
            f">= {2 * BEFORE_INT8}",
        ),
        Ratio(
            "64-images images/s, RNNSERVE_PRECISION=int8 ÷ fp32, at the highest c that neither refused",
            int8_over_float(at),
            "",
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


def answered_all(at: dict[tuple[str, str, int], Cell], server: str, form: str) -> dict[int, float]:
    """Inputs/s of the cells of `server` and `form` that answered every request, by concurrency: where
    requests are refused (429: at c=64, 64-image requests overflow the queue), a cell counts what got
    through, not how fast the server runs."""
    return {
        c: cell.inputs_per_s
        for (name, shape, c), cell in at.items()
        if (name, shape) == (server, form) and not cell.errors and cell.inputs_per_s
    }


def int8_over_float(at: dict[tuple[str, str, int], Cell]) -> float | None:
    """The int8 server's 64-images images/s over the fp32 one's, at the highest concurrency where both
    answered every request."""
    int8, fp32 = answered_all(at, INT8, "64-images"), answered_all(at, FP32, "64-images")
    both = sorted(int8.keys() & fp32.keys())
    return int8[both[-1]] / fp32[both[-1]] if both else None


def cpu_beyond_floor_and_model(
    ours: Cell | None, floor: Cell | None, ort: list[dict[str, Any]], server_list: list[Server]
) -> float | None:
    """The default's CPU per request less the floor's and less the model's, over the floor's. The model's
    is ONNX Runtime alone's CPU per image for digit_lstm in the precision and with the threads a model
    call of the default gets (GET /models; one per worker on 2 cores, where two threads a call would
    cost more CPU per image), at the measured batch size nearest (in ratio) to the cell's mean batch."""
    default = next((s for s in server_list if s.name == DEFAULT), None)
    served = default.models.get("digit_lstm") if default else None
    if not (ours and floor and served and ours.cpu_us and floor.cpu_us and ours.mean_batch):
        return None
    call = ("digit_lstm", served["precision"], served.get("threads"))
    rows = [r for r in ort if (r["model"], r["precision"], r["threads"]) == call]
    if not rows:
        return None
    nearest = min(rows, key=lambda r: abs(math.log(r["batch"] / ours.mean_batch)))
    return (ours.cpu_us - floor.cpu_us - nearest["cpu_us_per_input"]) / floor.cpu_us


def server_row(server: Server) -> list[str]:
    status = "; ".join(filter(None, [server.error, *server.notes])) or "measured"
    idle, processes = fmt(server.idle_cpu_percent), "" if server.processes is None else str(server.processes)
    return [
        server.name,
        status,
        idle,
        yes_no(server.torch_loaded),
        processes,
        served_as(server, "digit_lstm"),
    ]


def served_as(server: Server, model: str) -> str:
    """How `server` said (GET /models) it serves `model`: version, precision, device, provider."""
    found = server.models.get(model)
    if not found:
        return ""
    where = f"{found['backend']} on {found['device']}"
    if found.get("execution_provider"):
        where += f" ({found['execution_provider']})"
    return f"v{found['version']} {found['precision']}, {where}"


SERVERS_COLUMNS = "server|status|idle CPU %:|torch loaded|processes:|digit_lstm as served (GET /models)"
ORT_COLUMNS = "model|precision|batch:|threads:|provider|inputs/s:|CPU µs/input:"
CELL_COLUMNS = "server|form|c:|req/s:|inputs/s:|p50 ms:|p99 ms:|errors:|mean batch:|CPU µs/req:"
CELL_COLUMNS += "|RSS MB (largest process / all):|note"


def cell_row(cell: Cell) -> list[str]:
    speed = [fmt(cell.req_s, 0), fmt(cell.inputs_per_s, 0), fmt(cell.p50_ms, 2), fmt(cell.p99_ms, 2)]
    memory = f"{fmt(cell.rss_mb, 0)} / {fmt(cell.rss_total_mb, 0)}"
    cost = [str(cell.errors), fmt(cell.mean_batch), fmt(cell.cpu_us, 0), memory]
    return [cell.server, cell.form, str(cell.concurrency), *speed, *cost, cell.note]


def ort_table_row(row: dict[str, Any]) -> list[str]:
    rate, cpu = fmt(row["inputs_per_s"], 0), fmt(row.get("cpu_us_per_input"), 1)
    return [row["model"], row["precision"], row["batch"], row["threads"], row["provider"], rate, cpu]


def common_tables(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server]) -> list[str]:
    return (
        md_table("Servers", SERVERS_COLUMNS, [server_row(s) for s in server_list])
        + md_table("ONNX Runtime alone, in the bench process", ORT_COLUMNS, [ort_table_row(r) for r in ort])
        + md_table(
            "Cells: median over repeats (errors summed, RSS the largest)",
            CELL_COLUMNS,
            [cell_row(c) for c in cells],
        )
    )


def tables(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server], rows: list[Ratio]) -> str:
    """The report's body on the CPU: the servers, ONNX Runtime alone, the cells, the goal ratios and the
    comparisons (those with measured cells)."""
    return "\n".join(
        common_tables(cells, ort, server_list)
        + md_table(
            "Ratios (the default rnnserve unless named)", "ratio|measured:|goal|met", [r.row() for r in rows]
        )
        + rest_vs_v2(cells)
        + int8_vs_float(cells, ort)
        + workers(cells, server_list)
    )


def gpu_tables(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server]) -> str:
    """The report's body in the GPU mode: the servers, ONNX Runtime alone, the cells and their batch sizes."""
    return "\n".join(common_tables(cells, ort, server_list) + batch_sizes(cells))


def gpu_name() -> str:
    """The GPUs nvidia-smi lists, or "none" where it is missing or lists none."""
    if shutil.which("nvidia-smi") is None:
        return "none (no nvidia-smi)"
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    return "; ".join(done.stdout.strip().splitlines()) or f"none ({done.stderr.strip()[:100]})"


def header(args: argparse.Namespace, levels: tuple[int, ...]) -> str:
    import onnxruntime
    import uvicorn

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    versions = f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    versions += f", uvicorn {uvicorn.__version__}"
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    mode = "CPU: rnnserve beside its baselines"
    if args.gpu:
        mode = f"GPU: rnnserve with RNNSERVE_DEVICE={args.device}" + (" (dry run)" if args.dry_run else "")
        versions += f"; GPU: {gpu_name()}"
    return (
        f"# rnnserve benchmark\n\n- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}\n"
        f"- machine: {cpu or platform.processor()}, {os.cpu_count()} cores; {versions}\n"
        f"- command: `{command}`\n- mode: {mode}\n"
        f"- each cell: {args.warmup:g} s warm-up, then `hey -z {args.duration:g}s` (tritonclient: as long); "
        f"concurrency {', '.join(map(str, levels))}; {args.repeats} repeat(s), interleaved across servers\n"
        "- req/s counts 2xx answers; CPU is the server's whole process tree, per answer; mean batch is "
        "from the server's /metrics (the sum over its processes, each written at most 0.25 s late)\n\n"
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
