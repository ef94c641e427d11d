"""Two forecasters behind `POST /forecast` on one machine, measured interleaved: throughput at one
concurrency and each server's resident memory.

    python scripts/bench_forecasters.py                      # series_gru against sine_gru, c=64
    python scripts/bench_forecasters.py --rounds 6 --seconds 10
    python scripts/bench_forecasters.py --alone              # the graphs alone, every version
    python scripts/bench_forecasters.py --unbatched          # and series_gru with max_batch_size 1


Each model is served by a server of its own (`RNNSERVE_FORECAST_MODEL`, one worker, no other model
but the digit model every server loads), started together; then `hey` alternates between them, round
after round, each round in the other order, so that a slow minute of the machine costs both. The body
is one series of 240 monthly-like values and a horizon of 18. Prints the requests per second of every
round, the medians and their ratio, and each server's largest process's resident memory after the
load. `--unbatched` adds a third server, the first model with `RNNSERVE_MAX_BATCH_SIZE=1` (one model call
per request), and the ratio of batching.

`--alone` measures the models instead, without a server: every committed version of both, loaded as the
service loads it (ONNX Runtime, one thread) and timed in the forecasting task's own model call (the
padding and `session.run`) on batches of 1, 16 and 64 copies of the body's series, best of 5; it prints
milliseconds per series.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_forms import Form
from bench_load import run_hey
from local_server import start_service, stop
from process_stats import process_tree_rss

REPO_ROOT = Path(__file__).resolve().parent.parent


def body(seed: int = 0) -> bytes:
    t = np.arange(240)
    rng = np.random.default_rng(seed)
    series = 100 + 0.2 * t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=2.0, size=len(t))
    return json.dumps({"series": np.round(series, 3).tolist(), "horizon": 18}).encode()


def alone(models: list[str], batches: tuple[int, ...] = (1, 16, 64), repeats: int = 5) -> None:
    """Milliseconds per series of every committed version of `models`, without a server: each version
    loaded as the service loads it (ONNX Runtime on the CPU, one thread), timed in the forecasting task's
    own model call (`run_batch`: the padding and the graph) on batches of copies of the body's series."""
    sys.path.insert(0, str(REPO_ROOT))
    from service.config import Settings
    from service.loading import load_model
    from service.metrics import ServiceMetrics
    from service.tasks.forecasts import Forecaster, SeriesInput

    given = json.loads(body())
    series = SeriesInput(np.array(given["series"], dtype=np.float64), given["horizon"])
    settings, metrics = Settings(model_dir=REPO_ROOT / "models", device="cpu", threads=1), ServiceMetrics()
    print(f"\n| model | {' | '.join(f'batch {b}' for b in batches)} |")
    print(f"|---|{'---:|' * len(batches)}")
    for name in models:
        for folder in sorted((REPO_ROOT / "models" / name).iterdir(), key=lambda p: int(p.name)):
            model = load_model(Forecaster, name, settings, metrics, folder.name)
            assert isinstance(model, Forecaster)
            (query,) = model.queries([series])
            row = model.item(query.window, query.season)
            cells = []
            for batch in batches:
                rows = [row] * batch
                model.run_batch(rows)
                best = float("inf")
                for _ in range(repeats):
                    started = time.perf_counter()
                    model.run_batch(rows)
                    best = min(best, time.perf_counter() - started)
                cells.append(f"{1000 * best / batch:.2f} ms")
            print(f"| {name} v{folder.name} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, default=["series_gru", "sine_gru"], metavar=("NEW", "OLD"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--alone", action="store_true", help="the graphs alone in ONNX Runtime, no server")
    parser.add_argument("--unbatched", action="store_true", help="also NEW with RNNSERVE_MAX_BATCH_SIZE=1")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.alone:
        alone(args.models)
        return
    logs = Path(tempfile.mkdtemp(prefix="bench_forecasters_"))
    new, old = args.models
    unbatched = f"{new}, max_batch_size 1"
    models = {new: new, old: old} | ({unbatched: new} if args.unbatched else {})
    servers = {}
    for label, name in models.items():
        settings = {
            "model_dir": str(REPO_ROOT / "models"),
            "forecast_model": name,
            "models": "",
            "log_level": "WARNING",
        } | ({"max_batch_size": "1"} if label == unbatched else {})
        servers[label] = start_service(settings, log_path=logs / f"{label.replace(' ', '_')}.log")
    body_file = logs / "body.json"
    body_file.write_bytes(body())
    form = Form("forecast", "/forecast", "application/json", body_file.read_bytes(), "")
    rates: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                url, _ = servers[name]
                result = run_hey(url, form, body_file, args.concurrency, args.seconds)
                answered = sum(result["statuses"].values())
                failed = answered - result["statuses"].get(200, 0) + result["errors"]
                rate = answered / result["total_s"] if result.get("total_s") else 0.0
                rates[name].append(rate)
                print(f"round {round_ + 1} {name}: {rate:.1f} req/s, p99 {result.get('p99_ms', 0):.0f} ms, "
                      f"{failed} failed", flush=True)  # fmt: skip
        memory = {name: process_tree_rss(process.pid)[0] for name, (_, process) in servers.items()}
    finally:
        for _, process in servers.values():
            stop(process)
    medians = {label: statistics.median(values) for label, values in rates.items()}
    print(f"\n| model | median req/s (c={args.concurrency}) | largest process RSS |")
    print("|---|---:|---:|")
    for label in servers:
        print(f"| {label} | {medians[label]:.1f} | {memory[label]:.0f} MB |")
    ratio, extra = medians[new] / medians[old], memory[new] - memory[old]
    print(f"\n{new} / {old}: throughput {ratio:.2f}×, RSS {extra:+.0f} MB")
    if args.unbatched:
        print(f"{new} batched / one call per request: throughput {medians[new] / medians[unbatched]:.2f}×")


if __name__ == "__main__":
    main()
