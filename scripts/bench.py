"""Throughput, latency and server CPU of rnnserve beside its baselines, driven by `hey`.

    python scripts/bench.py                    # every cell, 3 interleaved repeats (about 40 minutes)
    python scripts/bench.py --quick            # concurrency 1 and 64, one repeat, 2 s cells
    python scripts/bench.py --only v2,int8     # only the servers and forms of those comparisons
    python scripts/bench.py --gpu              # on a GPU machine: rnnserve on CUDA (ORT and TorchScript)
    python scripts/bench.py --gpu --dry-run    # the same on the CPU, 0.5 s cells: the GPU mode anywhere

Starts each server on 127.0.0.1 (a free port each): rnnserve in several configurations (default
settings; max_batch_size 1; 1 worker; 2 workers either way; RNNSERVE_PRECISION=int8 and fp32; granian),
an empty FastAPI endpoint (the HTTP floor), one ONNX Runtime call per request without batching, and
LitServe when it is installed. They start one after another and then idle; a server that burns CPU
while idle (LitServe's workers poll) is stopped and started again only for its own cells. For each
repeat, each server runs its cells in turn, so that runs of different servers interleave in time. A
cell is one input form at one concurrency: a warm-up, then `hey -z DURATION` (the REST forms, and the
V2 protocol's JSON and binary bodies) or Triton's own client for the same time (bench_triton.py). The
forms of 64 images a request are also measured at concurrency 8, where they fit the queue: at 64, most
of them get 429, and a ratio of such cells counts refusals, so the ratios read the highest concurrency
with none. The report gives the median over repeats, the goal ratios, and the tables "REST vs V2",
"int8 vs float" and "1 vs N workers"; compare ratios, not absolute numbers (the cores are shared).
Inherited RNNSERVE_* variables are dropped, so that each row runs the configuration its name says.

`--gpu` measures rnnserve with RNNSERVE_DEVICE=cuda on ONNX Runtime and on TorchScript (json-pixels,
64-images, forecast at concurrency 1, 8, 64, 256), the batch sizes of each cell (rnnserve_batch_size
from /metrics) and ONNX Runtime alone with the CUDA provider. `--dry-run` runs any mode with one repeat
of 0.5 s cells; with `--gpu`, on the CPU (RNNSERVE_DEVICE=cpu), so that a GPU run only fills in the
numbers of tables already seen. The tables are printed as Markdown, to paste into the docs.

Writes OUT/bench.md, OUT/bench.json (with what each rnnserve said it serves, GET /models), OUT/bench.png
and the servers' logs in OUT/logs/. The hidden sub-mode `--serve KIND --port N` runs one of the
baseline servers.

The parts: bench_forms.py (the request bodies), bench_servers.py (the servers under test, started and
stopped), bench_baselines.py (ONNX Runtime alone and the baseline servers), bench_load.py (`hey` on
each cell, with the server's CPU, memory and batches), bench_triton.py (the tritonclient cell),
bench_tables.py and bench_report.py (ratios, tables, plot).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from bench_baselines import BASELINE_KINDS, ort_alone, serve
from bench_forms import make_forms
from bench_load import measure_all, medians, start_all
from bench_report import gpu_tables, header, ratios, tables, write_report
from bench_servers import PARTS, Server, default_threads, gpu_servers, select, servers, stop

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY, QUICK_CONCURRENCY = (1, 8, 64, 256), (1, 64)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 64, 1 repeat, 2 s cells")
    parser.add_argument("--gpu", action="store_true", help="the GPU servers (RNNSERVE_DEVICE=cuda)")
    parser.add_argument(
        "--dry-run", action="store_true", help="1 repeat, 0.5 s cells; with --gpu, RNNSERVE_DEVICE=cpu"
    )
    parser.add_argument("--only", help=f"comma-separated comparisons to measure alone: {', '.join(PARTS)}")
    parser.add_argument("--concurrency", help="comma-separated concurrency levels, in place of the mode's")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench", help="the report's folder")
    parser.add_argument("--duration", type=float, help="seconds of load per cell (default 5; --quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load before each (default 1)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3; --quick 1)")
    parser.add_argument("--serve", choices=BASELINE_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    short = args.quick or args.dry_run
    args.duration = args.duration or (0.5 if args.dry_run else 2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.dry_run else 1.0)
    args.repeats = args.repeats or (1 if short else 3)
    args.device = "cpu" if args.dry_run else "cuda"
    args.parts = [part.strip() for part in (args.only or "").split(",") if part.strip()]
    if unknown := [part for part in args.parts if part not in PARTS]:
        parser.error(f"--only {','.join(unknown)}: not a comparison; choose among {', '.join(PARTS)}")
    if args.gpu and args.parts:
        parser.error("--only selects among the CPU mode's comparisons; leave it out with --gpu")
    try:
        levels = [int(level) for level in (args.concurrency or "0").split(",")]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency}: give whole numbers separated by commas, e.g. 1,64")
    quick = QUICK_CONCURRENCY if args.quick and not args.gpu else CONCURRENCY
    args.levels = tuple(levels) if args.concurrency else quick
    return args


def plan(args: argparse.Namespace) -> list[Server]:
    """The servers of this run, each with its cells."""
    if args.gpu:
        return gpu_servers(args.levels, args.device)
    found = servers(args.levels)
    return select(found, args.parts) if args.parts else found


def main() -> None:
    args = parse_args()
    if args.serve:
        return serve(args.serve, args.port)
    if shutil.which("hey") is None:
        sys.exit("hey, the load generator, is not on PATH: `make load-tools` installs it (Debian's hey)")
    server_list, forms = plan(args), make_forms()
    for server in (s for s in server_list if s.error):
        print(f"{server.name}: {server.error}", file=sys.stderr)
    count = sum(len(s.cells()) for s in server_list if not s.error) * args.repeats
    minutes = count * (args.duration + args.warmup + 0.5) / 60
    print(f"{count} cells: about {minutes:.1f} minutes; timing ONNX Runtime alone first", file=sys.stderr)
    threads = () if args.gpu else (default_threads(),)
    try:
        ort = ort_alone(min(1.0, args.duration), args.device if args.gpu else "cpu", not args.gpu, threads)
    except RuntimeError as exc:  # no CUDA provider for a GPU run
        sys.exit(str(exc))
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    for old_log in (args.out / "logs").glob("*.log"):
        old_log.unlink()
    live = start_all(server_list, args.out / "logs")
    try:
        cells = measure_all(args, live, forms)
    finally:
        for server in live:
            stop(server)
    summary, head = medians(cells), header(args, args.levels)
    rows = [] if args.gpu else ratios(summary, ort, server_list)
    body = gpu_tables(summary, ort, server_list) if args.gpu else tables(summary, ort, server_list, rows)
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
