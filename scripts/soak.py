"""A soak test: the service at about 70 % of its measured capacity for a set time.

    python scripts/soak.py --seconds 900     # the README's 15-minute run
    python scripts/soak.py --seconds 60      # the version `make test` runs

Starts `python -m service` (the default settings, logs at WARNING) on 127.0.0.1, measures its capacity
with `hey` at concurrency 64 for a few seconds, then drives it at 70 % of that rate (JSON pixels to
/predict/digit and series to /forecast, alternating in intervals) and samples, each interval: errors,
p50/p99, the resident memory and open file descriptors of all the service's processes. Writes a
Markdown table to --out and exits 1 on any error, on memory growth over 5 % (last interval against the
first after the warm-up), or on a descriptor leak (more than --fd-slack descriptors more at the end).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from local_server import ServerNotReady, start_service, stop
from process_stats import open_descriptors, process_tree_rss

REPO = Path(__file__).resolve().parent.parent
DIGIT = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}
SERIES = {"series": [round(((t % 16) - 8) / 8, 4) for t in range(256)], "horizon": 32}
ROUTES = {"/predict/digit": DIGIT, "/forecast": SERIES}


@dataclass
class Sample:
    second: float
    route: str
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    fds: int

    def row(self) -> str:
        return (
            f"| {self.second:.0f} | {self.route} | {self.requests} | {self.errors} | {self.p50_ms:.1f} "
            f"| {self.p99_ms:.1f} | {self.rss_mb:.1f} | {self.fds} |"
        )


def hey(url: str, body: Path, seconds: float, concurrency: int, rate: float | None) -> dict[str, float]:
    """One `hey` run: requests, errors (non-2xx and transport errors), p50 and p99 in ms, req/s."""
    command = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    if rate:
        command += ["-q", f"{rate / concurrency:.2f}"]  # hey's -q is per client
    out = subprocess.run([*command, "-D", str(body), url], capture_output=True, text=True, check=False).stdout
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    transport = sum(
        int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", out.partition("Error distribution:")[2], re.M)
    )
    latency = {
        p: float(m[1]) * 1000 for p in ("50", "99") if (m := re.search(rf"{p}% in ([\d.]+) secs", out))
    }
    rate_found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "requests": float(sum(statuses.values())),
        "errors": float(sum(n for code, n in statuses.items() if not 200 <= code < 300) + transport),
        "p50": latency.get("50", float("nan")),
        "p99": latency.get("99", float("nan")),
        "rate": float(rate_found[1]) if rate_found else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=900, help="how long to soak (after the capacity run)"
    )
    parser.add_argument("--interval", type=float, default=10, help="seconds per sample")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the measured capacity")
    parser.add_argument("--fd-slack", type=int, default=16, help="descriptors the service may gain")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "soak" / "soak.md")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    args = parser.parse_args()

    try:  # logs at WARNING: a line per request would cost the service CPU during the soak
        base, process = start_service({"log_level": "WARNING", "drain_s": "0"}, port=args.port)
    except ServerNotReady as exc:
        sys.exit(str(exc))
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as scratch:
        bodies = {route: Path(scratch) / route.strip("/").replace("/", "-") for route in ROUTES}
        for route, body in ROUTES.items():
            bodies[route].write_text(json.dumps(body))
        try:
            capacity = {route: hey(base + route, bodies[route], 4, 64, None)["rate"] for route in ROUTES}
            print(f"capacity at concurrency 64: {capacity}", file=sys.stderr)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < args.seconds:
                route = list(ROUTES)[len(samples) % len(ROUTES)]
                run = hey(base + route, bodies[route], args.interval, 16, args.load * capacity[route])
                rss, fds = process_tree_rss(process.pid)[1], open_descriptors(process.pid)
                sample = Sample(elapsed + args.interval, route, int(run["requests"]), int(run["errors"]),
                                run["p50"], run["p99"], rss, fds)  # fmt: skip
                samples.append(sample)
                print(sample.row(), file=sys.stderr)
        finally:
            code = stop(process, timeout_s=60)
    verdict = judge(samples, args.fd_slack) + ([f"the service exited with {code}"] if code != 0 else [])
    write_report(args, capacity, samples, verdict)
    print("\n".join(verdict) or "soak passed: no errors, memory and descriptors flat")
    sys.exit(1 if verdict else 0)


def judge(samples: list[Sample], fd_slack: int) -> list[str]:
    """What went wrong, if anything: errors, memory growth over 5 %, descriptors leaked."""
    problems = []
    if errors := sum(s.errors for s in samples):
        problems.append(f"{errors} requests failed")
    if len(samples) >= 3:
        first, last = samples[1], samples[-1]  # the first interval warms up
        if last.rss_mb > first.rss_mb * 1.05:
            problems.append(f"memory grew from {first.rss_mb:.1f} MB to {last.rss_mb:.1f} MB (over 5 %)")
        if last.fds > first.fds + fd_slack:
            problems.append(f"open descriptors grew from {first.fds} to {last.fds}")
    return problems


def write_report(
    args: argparse.Namespace, capacity: dict[str, float], samples: list[Sample], verdict: list[str]
) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# rnnserve soak",
        "",
        f"- command: `python scripts/soak.py --seconds {args.seconds:g} --interval {args.interval:g}`",
        "- capacity (hey, concurrency 64, 4 s): "
        + ", ".join(f"{route} {rate:,.0f} req/s" for route, rate in capacity.items()),
        f"- load: {args.load:.0%} of it, 16 clients, routes alternating by interval",
        f"- verdict: {'; '.join(verdict) or 'passed: no errors, memory and descriptors flat'}",
        "",
        "| second | route | requests | errors | p50 ms | p99 ms | RSS MB (all processes) | open fds |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
        *(s.row() for s in samples),
    ]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
