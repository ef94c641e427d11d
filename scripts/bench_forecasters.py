"""Two forecasters behind `POST /forecast` on one machine, measured interleaved: throughput at one
concurrency and each server's resident memory.

    python scripts/bench_forecasters.py                      # series_gru against sine_gru, c=64
    python scripts/bench_forecasters.py --rounds 6 --seconds 10
    python scripts/bench_forecasters.py --alone              # the graphs alone, every version
    python scripts/bench_forecasters.py --unbatched          # and series_gru with max_batch_size 1
    python scripts/bench_forecasters.py --profile            # series_gru's time by operator type


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

`--profile` runs the newest version of NEW under ONNX Runtime's own profiler (one thread, the service's
session options, 20 calls on a batch of 64 copies of the body's series) and prints each operator type's
share of the kernel time: how much of the graph's cost lies in matrix products and the GRU, what an
integer variant could speed up.
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
from bench_load import interleaved, outcome, run_hey
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


def profile(name: str, batch: int = 64, calls: int = 20, top: int = 12) -> None:
    """Each operator type's share of the kernel time of the newest version of `name` (see the module's
    text), from ONNX Runtime's profiler."""
    sys.path.insert(0, str(REPO_ROOT))
    import onnxruntime as ort

    from service.config import Settings
    from service.loading import load_model
    from service.metrics import ServiceMetrics
    from service.repository import locate
    from service.runtimes.onnx import CPU, session_options
    from service.tasks.forecasts import Forecaster, SeriesInput

    given = json.loads(body())
    series = SeriesInput(np.array(given["series"], dtype=np.float64), given["horizon"])
    settings = Settings(model_dir=REPO_ROOT / "models", device="cpu", threads=1)
    model = load_model(Forecaster, name, settings, ServiceMetrics(), None)
    assert isinstance(model, Forecaster)
    (query,) = model.queries([series])
    feeds = model.feeds([model.item(query.window, query.season)] * batch)
    artifact = locate(settings.model_dir, name, "onnx")
    with tempfile.TemporaryDirectory(prefix="bench_forecasters_") as scratch:
        options = session_options(1)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(artifact.file), sess_options=options, providers=[CPU])
        for _ in range(calls):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_type[op] = by_type.get(op, 0.0) + event["dur"]
    total = sum(by_type.values())
    print(
        f"\n{name} v{artifact.version}: kernel time by operator type, batch {batch}, {calls} calls, 1 thread"
    )
    print("\n| operator | share of kernel time |")
    print("|---|---:|")
    ranked = sorted(by_type.items(), key=lambda item: -item[1])
    for op, spent in ranked[:top]:
        print(f"| {op} | {100 * spent / total:.1f} % |")
    rest = sum(spent for _, spent in ranked[top:])
    print(f"| {len(ranked) - top} other types | {100 * rest / total:.1f} % |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, default=["series_gru", "sine_gru"], metavar=("NEW", "OLD"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--alone", action="store_true", help="the graphs alone in ONNX Runtime, no server")
    parser.add_argument("--unbatched", action="store_true", help="also NEW with RNNSERVE_MAX_BATCH_SIZE=1")
    parser.add_argument("--profile", action="store_true", help="NEW's time by operator type, no server")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile:
        profile(args.models[0])
        return
    if args.alone:
        alone(args.models)
        return
    with tempfile.TemporaryDirectory(prefix="bench_forecasters_") as scratch:
        served(args, Path(scratch))


def served(args: argparse.Namespace, logs: Path) -> None:
    """The two forecasters (and NEW unbatched, if asked) served and driven by `hey` in interleaved rounds;
    the servers' logs and the request body go into `logs`."""
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

    def measure(name: str) -> tuple[float, str]:
        result = run_hey(servers[name][0], form, body_file, args.concurrency, args.seconds)
        failed, answered = outcome(result)
        rate = answered or 0.0  # requests/s answered 2xx
        return rate, f"{name}: {rate:.1f} req/s, p99 {result.get('p99_ms', 0):.0f} ms, {failed} failed"

    try:
        rates = interleaved(list(servers), args.rounds, measure)
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
