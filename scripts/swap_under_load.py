"""Model versions swapped under steady load: failed requests, latency while swapping, and memory.

    python scripts/swap_under_load.py                   # the README's run: 64 connections, 20 swaps a mode
    python scripts/swap_under_load.py --modes 1 --swaps 2 --seconds-between 1   # a short one

For each mode (1 worker; 2 workers, models inline; 2 workers and the model engine), starts `python -m
service` on a copy of `digit_lstm` and `sine_gru` (two versions each) and drives both tasks with `hey`,
--concurrency connections in all (half send a digit, half a series):
1. steady: --steady seconds with no swap;
2. swapping: `sine_gru` and `digit_lstm` swapped between their two versions in turn, --swaps times each,
   one `POST /v2/repository/models/<name>/load` every --seconds-between seconds, while a prober (one
   connection per model, one request after another) reads which version answers.
Reported per mode: hey's requests and failures (any status but 200, and any error: a reset, a timeout)
in both phases and the prober's; p99 latency of each phase; each swap call's duration and the time from
the call to the prober's first answer by the new version; the resident memory of all the service's
processes after the steady phase and after each swap: the most after the first four (both versions of
both models loaded once) against the most after the last four. Prints a Markdown table; exits 1 if any
request failed.
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_forms import Form
from bench_load import run_hey
from local_server import start_service, stop
from process_stats import process_tree_rss

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "swap-under-load"
DIGIT = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}
SERIES = {"series": [round(((t % 16) - 8) / 8, 4) for t in range(128)], "horizon": 16, "model": "sine_gru"}
FORMS = {
    "digit_lstm": Form(
        "digit", "/predict/digit", "application/json", json.dumps(DIGIT).encode(), "digit_lstm"
    ),
    "sine_gru": Form("series", "/forecast", "application/json", json.dumps(SERIES).encode(), "sine_gru"),
}
MODES = {
    "1": ("1 worker", {"workers": "1"}),
    "2": ("2 workers, models inline", {"workers": "2", "engine": "inline"}),
    "engine": ("2 workers, model engine", {"workers": "2", "engine": "process"}),
}


@dataclass
class Probe:
    model: str
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
class Swapping:
    probes: list[Probe] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    done: bool = False


async def probe(client: httpx.AsyncClient, model: str, run: Swapping) -> None:
    """One connection asking `model` again and again, noting which version answers."""
    form = FORMS[model]
    while not run.done:
        try:
            response = await client.post(
                form.route, content=form.body, headers={"Content-Type": form.content_type}
            )
            status = response.status_code
            version = str(response.json().get("version", "")) if status == 200 else ""
        except (httpx.HTTPError, ValueError):
            status, version = 0, ""
        run.probes.append(Probe(model, time.monotonic(), status, version))


async def swap_in_turn(client: httpx.AsyncClient, run: Swapping, pid: int, args: argparse.Namespace) -> None:
    versions = {"sine_gru": "2", "digit_lstm": "2"}
    for index in range(2 * args.swaps):
        await asyncio.sleep(args.seconds_between)
        if index:
            run.rss_mb.append(process_tree_rss(pid)[1])  # the last swap's, once it has settled
        model = ("sine_gru", "digit_lstm")[index % 2]
        versions[model] = "1" if versions[model] == "2" else "2"
        called = time.monotonic()
        response = await client.post(
            f"/v2/repository/models/{model}/load", json={"parameters": {"version": versions[model]}},
            headers={"X-API-Key": ADMIN_KEY}, timeout=300,
        )  # fmt: skip
        run.swaps.append(Swap(model, versions[model], called, time.monotonic(), response.status_code))
    await asyncio.sleep(args.seconds_between)
    run.rss_mb.append(process_tree_rss(pid)[1])
    run.done = True


def load(url: str, seconds: float, concurrency: int, scratch: Path) -> dict[str, dict[str, Any]]:
    """Both routes under `hey` at once for `seconds`, half the connections each: hey's summaries."""
    bodies = {}
    for model, form in FORMS.items():
        bodies[model] = scratch / f"{model}.json"
        bodies[model].write_bytes(form.body)
    with ThreadPoolExecutor(len(FORMS)) as pool:
        runs = {
            model: pool.submit(run_hey, url, form, bodies[model], max(1, concurrency // 2), seconds)
            for model, form in FORMS.items()
        }
        return {model: run.result() for model, run in runs.items()}


async def swapping_phase(url: str, pid: int, args: argparse.Namespace, scratch: Path) -> tuple[Swapping, Any]:
    run = Swapping()
    seconds = (2 * args.swaps + 1) * args.seconds_between
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        hey = asyncio.ensure_future(asyncio.to_thread(load, url, seconds + 1, args.concurrency, scratch))
        await asyncio.gather(swap_in_turn(client, run, pid, args), *(probe(client, m, run) for m in FORMS))
        return run, await hey


def failures(runs: dict[str, dict[str, Any]]) -> int:
    return sum(r["errors"] + sum(n for s, n in r["statuses"].items() if s != 200) for r in runs.values())


def requests(runs: dict[str, dict[str, Any]]) -> int:
    return sum(sum(r["statuses"].values()) + r["errors"] for r in runs.values())


def first_new_answers(run: Swapping) -> list[float]:
    """For each swap, seconds from the call to the prober's first answer by the new version."""
    seconds = []
    for swap in run.swaps:
        new = [
            p.done
            for p in run.probes
            if p.model == swap.model and p.version == swap.version and p.done > swap.called
        ]
        seconds.append(min(new) - swap.called if new else float("nan"))
    return seconds


def run_mode(key: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    mode, settings = MODES[key]
    folder = scratch / key
    for name in FORMS:  # versions 1 and 2 of each, the newest served at the start
        for version in ("1", "2"):
            shutil.copytree(REPO / "models" / name / version, folder / "models" / name / version)
    chosen = settings | {
        "model_dir": str(folder / "models"), "forecast_model": "sine_gru", "models": "",
        "admin_keys": ADMIN_KEY, "log_level": "WARNING", "drain_s": "0",
    }  # fmt: skip
    url, process = start_service(chosen, log_path=folder / "server.log")
    try:
        load(url, args.warmup, args.concurrency, folder)
        steady = load(url, args.steady, args.concurrency, folder)
        steady_rss = process_tree_rss(process.pid)[1]
        run, swapping = asyncio.run(swapping_phase(url, process.pid, args, folder))
    finally:
        stop(process)
    p99 = {phase: max(r.get("p99_ms", float("nan")) for r in runs.values())
           for phase, runs in (("steady", steady), ("swapping", swapping))}  # fmt: skip
    return {
        "mode": mode,
        "steady_requests": requests(steady),
        "steady_failed": failures(steady),
        "swapping_requests": requests(swapping),
        "swapping_failed": failures(swapping),
        "probes": len(run.probes),
        "probes_failed": sum(p.status != 200 for p in run.probes),
        "failed_swaps": sum(s.status != 200 for s in run.swaps),
        "swaps": len(run.swaps),
        "versions": sorted({f"{p.model} {p.version}" for p in run.probes if p.status == 200}),
        "statuses": {
            phase: {m: dict(Counter(r["statuses"])) for m, r in runs.items()}
            for phase, runs in (("steady", steady), ("swapping", swapping))
        },
        "p99_steady_ms": p99["steady"],
        "p99_swapping_ms": p99["swapping"],
        "swap_call_s": statistics.median(s.returned - s.called for s in run.swaps),
        "first_new_answer_s": statistics.median(first_new_answers(run)),
        "rss_steady_mb": steady_rss,
        "rss_after_each_swap_mb": run.rss_mb,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | requests (steady + swapping) | failed | p99 steady / swapping (ms) | swap call (s, median) "
        "| call to first answer by the new version (s, median) "
        "| RSS: steady → most after swaps 1–4 → most after the last 4 (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        failed = r["steady_failed"] + r["swapping_failed"] + r["probes_failed"] + r["failed_swaps"]
        after = r["rss_after_each_swap_mb"]
        rss = f"{r['rss_steady_mb']:.0f} → {max(after[:4]):.0f} → {max(after[-4:]):.0f}"
        lines.append(
            f"| {r['mode']} | {r['steady_requests']:,} + {r['swapping_requests'] + r['probes']:,} | {failed} "
            f"| {r['p99_steady_ms']:.0f} / {r['p99_swapping_ms']:.0f} | {r['swap_call_s']:.2f} "
            f"| {r['first_new_answer_s']:.2f} | {rss} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--concurrency", type=int, default=64, help="hey's connections, both routes together")
    parser.add_argument("--swaps", type=int, default=10, help="swaps of each model (default 10: 20 in all)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of load with no swap")
    parser.add_argument("--seconds-between", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnserve-swaps-") as scratch:
        rows = [run_mode(key, args, Path(scratch)) for key in args.modes]
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))
    failed = [
        r
        for r in rows
        if r["steady_failed"] or r["swapping_failed"] or r["probes_failed"] or r["failed_swaps"]
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
