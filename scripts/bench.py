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

The parts: bench_forms.py (the request bodies), bench_servers.py (the servers under test, started and
stopped), bench_baselines.py (ONNX Runtime alone and the baseline servers), bench_load.py (`hey` on
each cell, with the server's CPU, memory and batches), bench_report.py (ratios, tables, plot).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from bench_baselines import BASELINE_KINDS, ort_alone, serve
from bench_forms import make_forms
from bench_load import measure_all, medians, start_all
from bench_report import header, ratios, tables, write_report
from bench_servers import servers, stop

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY, QUICK_CONCURRENCY = (1, 8, 64, 256), (1, 64)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 64, 1 repeat, 2 s cells")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench", help="the report's folder")
    parser.add_argument("--duration", type=float, help="seconds of `hey` per cell (default 5; --quick 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured `hey` before each")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3; --quick 1)")
    parser.add_argument("--serve", choices=BASELINE_KINDS, help=argparse.SUPPRESS)
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
