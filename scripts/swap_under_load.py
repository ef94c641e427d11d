"""Model versions swapped under steady load: failed requests, latency around each swap, and memory.

    python scripts/swap_under_load.py                                # the README's run, ~2 min a mode
    python scripts/swap_under_load.py --modes 1 --swaps 2 --seconds-between 2   # a short one

For each mode (1 worker; 2 workers, models inline; 2 workers and the model engine), starts `python -m
service` on a copy of `digit_lstm` and `sine_gru` (two versions each), drives both tasks with
--concurrency connections (half send a digit, half a series), and once steady, swaps `sine_gru` and
`digit_lstm` between their two versions in turn, --swaps times each, with `POST
/v2/repository/models/<name>/load`. Every answer must be 200 and name a version; reported per mode:
- requests and failed requests (anything but 200: an error, a reset, a refusal);
- p99 latency in steady state, and within a second of each swap;
- each swap call's duration, and the time from the call to the first answer by the new version;
- the resident memory of all the service's processes after the warm-up and after every swap.
Prints a Markdown table; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from local_server import start_service, stop
from process_stats import process_tree_rss

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "swap-under-load"
DIGIT = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}
SERIES = {"series": [round(((t % 16) - 8) / 8, 4) for t in range(128)], "horizon": 16, "model": "sine_gru"}
MODES = {
    "1": ("1 worker", {"workers": "1"}),
    "2": ("2 workers, models inline", {"workers": "2", "engine": "inline"}),
    "engine": ("2 workers, model engine", {"workers": "2", "engine": "process"}),
}
MODELS = {"sine_gru": ("/forecast", SERIES), "digit_lstm": ("/predict/digit", DIGIT)}


@dataclass
class Answer:
    model: str
    sent: float
    done: float
    status: int
    version: str


@dataclass
class Swap:
    model: str
    version: str
    called: float
    returned: float
    status: int


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    stop: bool = False


async def drive(client: httpx.AsyncClient, model: str, run: Run) -> None:
    """One connection's loop: a request, its answer, the next."""
    path, body = MODELS[model]
    while not run.stop:
        sent = time.monotonic()
        try:
            response = await client.post(path, json=body)
            status = response.status_code
            version = str(response.json().get("version", "")) if status == 200 else ""
        except (httpx.HTTPError, ValueError):
            status, version = 0, ""
        run.answers.append(Answer(model, sent, time.monotonic(), status, version))


async def swap_in_turn(client: httpx.AsyncClient, run: Run, pid: int, args: argparse.Namespace) -> None:
    await asyncio.sleep(args.warmup)
    run.rss_mb.append(process_tree_rss(pid)[1])
    version = {"sine_gru": "2", "digit_lstm": "2"}
    for index in range(2 * args.swaps):
        model = ("sine_gru", "digit_lstm")[index % 2]
        version[model] = "1" if version[model] == "2" else "2"
        called = time.monotonic()
        response = await client.post(
            f"/v2/repository/models/{model}/load", json={"parameters": {"version": version[model]}},
            headers={"X-API-Key": ADMIN_KEY}, timeout=300,
        )  # fmt: skip
        run.swaps.append(Swap(model, version[model], called, time.monotonic(), response.status_code))
        await asyncio.sleep(args.seconds_between)
        run.rss_mb.append(process_tree_rss(pid)[1])
    run.stop = True


async def measure(url: str, pid: int, args: argparse.Namespace) -> Run:
    run = Run()
    limits = httpx.Limits(
        max_connections=args.concurrency + 1, max_keepalive_connections=args.concurrency + 1
    )
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        drivers = [drive(client, ("sine_gru", "digit_lstm")[i % 2], run) for i in range(args.concurrency)]
        await asyncio.gather(swap_in_turn(client, run, pid, args), *drivers)
    return run


def p99_ms(answers: list[Answer]) -> float:
    latencies = [1000 * (a.done - a.sent) for a in answers]
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else float("nan")


def summary(mode: str, run: Run) -> dict[str, object]:
    near = [a for a in run.answers if any(s.called - 1 <= a.done <= s.returned + 1 for s in run.swaps)]
    first_swap = run.swaps[0].called if run.swaps else float("inf")
    steady = [a for a in run.answers if a.done < first_swap - 1 and a.sent > run.answers[0].sent + 1]
    to_new = []
    for swap in run.swaps:
        new = [a.done for a in run.answers if a.model == swap.model and a.version == swap.version
               and a.sent >= swap.called]  # fmt: skip
        to_new.append(min(new) - swap.called if new else float("nan"))
    return {
        "mode": mode,
        "requests": len(run.answers),
        "failed": sum(a.status != 200 for a in run.answers),
        "failed_swaps": sum(s.status != 200 for s in run.swaps),
        "versions": sorted({f"{a.model} {a.version}" for a in run.answers if a.status == 200}),
        "p99_steady_ms": p99_ms(steady),
        "p99_near_swaps_ms": p99_ms(near),
        "swap_call_s": statistics.median(s.returned - s.called for s in run.swaps),
        "first_new_answer_s": statistics.median(to_new),
        "rss_after_warmup_mb": run.rss_mb[0],
        # Each version of both models loaded once (after 4 swaps), then only swapped back and forth.
        "rss_after_first_round_mb": run.rss_mb[min(4, len(run.rss_mb) - 1)],
        "rss_mb": run.rss_mb,
        "rss_after_swaps_mb": run.rss_mb[-1],
        "swaps": len(run.swaps),
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| mode | requests | failed | p99 steady (ms) | p99 within 1 s of a swap (ms) "
        "| swap call (s, median) | call to first new answer (s, median) "
        "| RSS: warm-up → both versions seen → end (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['requests']} | {r['failed']} | {r['p99_steady_ms']:.0f} "
            f"| {r['p99_near_swaps_ms']:.0f} | {r['swap_call_s']:.2f} | {r['first_new_answer_s']:.2f} "
            f"| {r['rss_after_warmup_mb']:.0f} → {r['rss_after_first_round_mb']:.0f} "
            f"→ {r['rss_after_swaps_mb']:.0f} |"
        )
    return "\n".join(lines)


def run_mode(key: str, args: argparse.Namespace, scratch: Path) -> dict[str, object]:
    mode, settings = MODES[key]
    models = scratch / key / "models"
    for name in MODELS:
        shutil.copytree(REPO / "models" / name, models / name)
    chosen = settings | {
        "model_dir": str(models), "forecast_model": "sine_gru", "models": "", "admin_keys": ADMIN_KEY,
        "log_level": "WARNING", "drain_s": "0",
    }  # fmt: skip
    url, process = start_service(chosen, log_path=scratch / f"{key}.log")
    try:
        run = asyncio.run(measure(url, process.pid, args))
    finally:
        stop(process)
    return summary(mode, run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--swaps", type=int, default=10, help="swaps of each model (default 10: 20 in all)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of steady load before the first")
    parser.add_argument("--seconds-between", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnserve-swaps-") as scratch:
        rows = [run_mode(key, args, Path(scratch)) for key in args.modes]
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))
    return 1 if any(row["failed"] or row["failed_swaps"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
