"""The benchmark's report: the goal ratios, Markdown tables, a header on the run, and the plot, written
into OUT/bench.md, OUT/bench.json and OUT/bench.png."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_load import Cell
from bench_servers import (
    BATCH_1,
    DEFAULT,
    FLOOR,
    GRANIAN,
    LITSERVE,
    ONE_CALL,
    ONE_WORKER,
    WORKERS_ENGINE,
    WORKERS_INLINE,
    Server,
)


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


def yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def md_table(title: str, columns: str, rows: list[list[Any]]) -> list[str]:
    """A Markdown section; `columns` is "a|b:|c", a trailing ":" right-aligns the column."""
    names = columns.split("|")
    align = ["---:" if name.endswith(":") else "---" for name in names]
    head = [f"| {' | '.join(name.rstrip(':') for name in names)} |", f"|{'|'.join(align)}|"]
    return [f"## {title}", "", *head, *(f"| {' | '.join(map(str, row))} |" for row in rows), ""]


def server_row(server: Server) -> list[str]:
    status = "; ".join(filter(None, [server.error, *server.notes])) or "measured"
    return [server.name, status, fmt(server.idle_cpu_percent), yes_no(server.torch_loaded)]


def cell_row(cell: Cell) -> list[str]:
    speed = [fmt(cell.req_s, 0), fmt(cell.inputs_per_s, 0), fmt(cell.p50_ms, 2), fmt(cell.p99_ms, 2)]
    memory = f"{fmt(cell.rss_mb, 0)} / {fmt(cell.rss_total_mb, 0)}"
    cost = [str(cell.errors), fmt(cell.mean_batch), fmt(cell.cpu_us, 0), memory]
    return [cell.server, cell.form, str(cell.concurrency), *speed, *cost, cell.note]


def tables(cells: list[Cell], ort: list[dict[str, Any]], server_list: list[Server], rows: list[Ratio]) -> str:
    ort_rows = [[r["model"], r["batch"], fmt(r["inputs_per_s"], 0)] for r in ort]
    columns = "server|form|c:|req/s:|inputs/s:|p50 ms:|p99 ms:|errors:|mean batch:|CPU µs/req:"
    columns += "|RSS MB (largest process / all):|note"
    return "\n".join(
        md_table("Servers", "server|status|idle CPU %:|torch loaded", [server_row(s) for s in server_list])
        + md_table("ONNX Runtime alone, in the bench process", "model|batch:|inputs/s:", ort_rows)
        + md_table(
            "Cells: median over repeats (errors summed, RSS the largest)",
            columns,
            [cell_row(c) for c in cells],
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
