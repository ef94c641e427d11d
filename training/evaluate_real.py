"""The served forecaster on real series, beside statsforecast's baselines on the same windows.

    python -m training.evaluate_forecast --real --set validation --baselines

The windows are `training.real_series`'s: each series' last h values held out, at most 1,024 values
of history before them (`--origins` and `--horizon-scale` add earlier and longer windows). The served
forecaster runs as the service runs it: the model located and checked against its metadata, opened by
the service's ONNX Runtime, each history checked by the forecasting task's input rules (its metadata's
`min_length` and `max_horizon`), cut to its `context_length` and padded by `service.series`, its
intervals (95 % and 80 %, a forecast's default levels) computed by the task's `answer`.
A window the model refuses is listed with the reason and scored for no forecaster. A model whose graph
takes a season hint (series_gru) runs twice: with the group's season length m as `season_length`
("m given"), and without one ("m detected").

Baselines (statsforecast, the `eval` extra): `SeasonalNaive`, `AutoETS`, `AutoTheta`, `AutoARIMA`, each
with season length m, `forecast(y=history, h=h, level=[80, 95])`. statsforecast's ETS fits no seasonal
component when m > 24, and a seasonal ARIMA with m = 48 or 52 takes minutes a series; so, for m > 24,
AutoETS and AutoARIMA are fitted to the series that MSTL has seasonally adjusted (period m), and MSTL adds
its seasonal component back (`MSTL(season_length=m, trend_forecaster=AutoETS(model="ZZN"))`, or
`AutoARIMA()`). Each series' report names the model that was fitted.

With `--candidates`, `training.candidates`' backtest combiner (numpy) runs beside them, m given and m
detected; each series' report names the candidates it weighed and their weights.

Per series: MASE (the forecast's MAE over the in-sample MAE of the seasonal naive forecast, lag m, or
lag 1 when the history is shorter than 2m), relative MASE (MASE over the seasonal naive forecast's
MASE on the same window, so the scale cancels) and the share of held-out values inside the 95 %
interval (and inside the 80 % one). Per frequency group and over all series: the geometric mean of
relative MASE, the mean of MASE and of each coverage, the share of series whose relative MASE exceeds
1.5, the held-out values, and the chance that exactly calibrated 95 % bands would cover 0.85–0.99 of
those values (`training.real_tables`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.loading import load_model
from service.metrics import ServiceMetrics
from service.series import interval, normal_quantile
from service.tasks.forecasts import Forecaster, SeriesInput, level_key
from training import candidates
from training.metrics import seasonal_naive
from training.real_series import FREQUENCIES, MAX_HISTORY, SETS, Window, windows
from training.real_tables import calibrated_chance, markdown, per_series_markdown

logger = logging.getLogger(__name__)

LEVEL = 95.0
"""The level of the bands the goals judge."""
LEVELS = (80.0, LEVEL)
"""The levels scored: the goals' and, with it, a forecast's default levels (80 and 95)."""
WORSE = 1.5
"""A forecaster does much worse than seasonal naive on a series when its relative MASE exceeds this."""
BASELINES = ("SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA")
COVERAGE_GOAL, GROUP_COVERAGE_GOAL = (0.90, 0.98), (0.85, 0.99)
"""The share of the held-out values that 95 % bands should cover: over all series, and in each group."""
MAX_ETS_SEASON = 24
"""The longest season statsforecast's ETS fits; longer ones go through MSTL (above)."""


@dataclass(frozen=True)
class Forecast:
    """A point forecast over the horizon, its lower and upper bounds at each of `LEVELS`, and the model
    that made it."""

    mean: np.ndarray
    bounds: dict[float, tuple[np.ndarray, np.ndarray]]
    fitted: str

    @property
    def lower(self) -> np.ndarray:
        return self.bounds[LEVEL][0]

    @property
    def upper(self) -> np.ndarray:
        return self.bounds[LEVEL][1]


def served_model(model_dir: Path, name: str, version: str | None) -> Forecaster:
    """Model `name` (version `version`, the newest when None) as the service loads it: located, its
    checksum verified, opened by ONNX Runtime on the CPU with one thread, and warmed up."""
    settings = Settings(
        model_dir=model_dir, device="cpu", threads=1, model_versions={name: version} if version else {}
    )
    model = load_model(Forecaster, name, settings, ServiceMetrics())
    assert isinstance(model, Forecaster)
    return model


def refusal(model: Forecaster, window: Window) -> str | None:
    """Why the served model cannot forecast this window (its metadata's limits), or None."""
    problem = model.series_problem(window.history)
    if problem:
        return f"history {problem}"
    problem = model.horizon_problem(window.horizon)
    return f"horizon {problem}" if problem else None


def served_forecasts(
    model: Forecaster, accepted: Sequence[Window], season_given: bool = False
) -> list[Forecast]:
    """The model's forecast and intervals (`LEVELS`) for each window, all in one padded batch, through the
    forecasting task's own windows (`queries`), model call (`run_batch`) and answer (`answer`); with
    `season_given`, each window's group season goes with it as the `season_length` hint."""
    inputs = [
        SeriesInput(w.history, w.horizon, LEVELS, season=w.series.season if season_given else None)
        for w in accepted
    ]
    queries = model.queries(inputs)
    moments = model.run_batch([model.item(q.window, q.season) for q in queries])
    fitted = f"{model.name} v{model.version} (ONNX Runtime, as served)"
    forecasts = []
    for query, (mean, std) in zip(queries, moments, strict=True):
        answer = model.answer(query, mean, std)
        intervals = [answer["intervals"][level_key(level)] for level in LEVELS]
        bounds = {
            level: (band["lower"], band["upper"]) for level, band in zip(LEVELS, intervals, strict=True)
        }
        forecasts.append(Forecast(answer["forecast"], bounds, fitted))
    return forecasts


def baseline_model(method: str, season: int) -> tuple[Any, str]:
    """statsforecast's model `method` for season length `season`, and a description of what it fits."""
    try:
        from statsforecast import models
    except ImportError:
        raise SystemExit("the baselines need statsforecast: pip install -e '.[eval]'") from None
    if method not in BASELINES:
        raise ValueError(f"no baseline {method!r}; choose from {', '.join(BASELINES)}")
    if method in ("AutoETS", "AutoARIMA") and season > MAX_ETS_SEASON:
        trend = models.AutoETS(model="ZZN") if method == "AutoETS" else models.AutoARIMA()
        described = f"MSTL(season_length={season}) + {method} on the seasonally adjusted series"
        return models.MSTL(season_length=season, trend_forecaster=trend), described
    return getattr(models, method)(season_length=season), f"{method}(season_length={season})"


def baseline_forecast(method: str, window: Window) -> Forecast:
    model, fitted = baseline_model(method, window.series.season)
    try:
        answer = model.forecast(y=window.history, h=window.horizon, level=[int(level) for level in LEVELS])
    except Exception as exc:  # statsforecast raises many types; say which series and model failed
        raise RuntimeError(f"{fitted} failed on {window.series.name}: {exc}") from exc
    bounds = {level: (answer[f"lo-{level:g}"], answer[f"hi-{level:g}"]) for level in LEVELS}
    return Forecast(answer["mean"], bounds, fitted)


CANDIDATES = {"candidates (m given)": True, "candidates (m detected)": False}
"""The combiner's two runs in the report: its label, and whether it is given the group's m."""


def candidate_forecast(window: Window, season_given: bool) -> Forecast:
    """`training.candidates`' combination for the window, its fitted text naming m and the weights."""
    history, h = window.history, window.horizon
    m = window.series.season if season_given else None
    mean, lower, upper = candidates.forecast(history, h, m)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in candidates.chosen(history, h, m).items())
    std = (upper - lower) / 2 / normal_quantile(LEVEL)  # the combiner's bands are Gaussian
    bounds = {level: interval(mean, std, level) for level in LEVELS}
    return Forecast(mean, bounds, f"m={candidates.season_length(history, m)}: {weights}")


def mase_scale(history: np.ndarray, season: int) -> float:
    """The in-sample MAE of the seasonal naive forecast: lag `season`, or lag 1 when the history is
    shorter than two seasons."""
    lag = season if len(history) >= 2 * season else 1
    scale = float(np.abs(history[lag:] - history[:-lag]).mean())
    if not scale > 0:
        raise ValueError(f"the history repeats itself exactly at lag {lag}: MASE has no scale")
    return scale


def reference(window: Window) -> tuple[float, float]:
    """The window's MASE scale and the seasonal naive forecast's MASE on it (lag m)."""
    scale = mase_scale(window.history, window.series.season)
    naive = seasonal_naive(window.history[None], np.array([window.series.season]), window.horizon)[0]
    return scale, float(np.abs(naive - window.truth).mean()) / scale


def gaussian_forecast(window: Window, mean: np.ndarray, std: np.ndarray, fitted: str) -> Forecast:
    """A model's mean and std cut to the window's horizon, with each level's interval mean ± z·std."""
    h = window.horizon
    return Forecast(mean[:h], {level: interval(mean[:h], std[:h], level) for level in LEVELS}, fitted)


def scores(window: Window, forecast: Forecast, naive_mase: float, scale: float) -> dict[str, Any]:
    mase = float(np.abs(forecast.mean - window.truth).mean()) / scale
    covered = {
        f"coverage_{level:g}": float(((window.truth >= lower) & (window.truth <= upper)).mean())
        for level, (lower, upper) in forecast.bounds.items()
    }
    return {"mase": mase, "relative_mase": mase / naive_mase, **covered, "fitted": forecast.fitted}


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Geometric-mean relative MASE, mean MASE, mean coverage at each level and the share of series much
    worse than seasonal naive, over `rows` (one per series)."""
    relative = np.array([r["relative_mase"] for r in rows])
    levels = [f"coverage_{level:g}" for level in LEVELS]
    return {
        "series": len(rows),
        "geomean_relative_mase": float(np.exp(np.log(relative).mean())),
        "mean_mase": float(np.mean([r["mase"] for r in rows])),
        **{key: float(np.mean([r[key] for r in rows])) for key in levels},
        "share_worse_than_1.5x_naive": float(np.mean(relative > WORSE)),
    }


def evaluate_real(
    sets: str | Sequence[str],
    model_dir: Path = Path("models"),
    name: str = "series_gru",
    version: str | None = None,
    baselines: Iterable[str] = (),
    sample: int | None = None,
    with_candidates: bool = False,
    plot: Path | None = None,
    origins: int = 1,
    horizon_scale: int = 1,
) -> dict[str, Any]:
    """The real-series protocol on the set named `sets`, or on several sets read as one (`sample` of each
    set's series when given); with `with_candidates`, the candidates' combiner too (m given, m detected);
    with `plot`, a picture of `PLOTTED` series' forecasts there; `origins` and `horizon_scale` as
    `training.real_series.windows` takes them."""
    model = served_model(model_dir, name, version)
    label = f"{name} v{model.version}"
    names = (sets,) if isinstance(sets, str) else tuple(sets)
    set_name = "+".join(names)
    chosen = [w for one in names for w in windows(one, sample, origins, horizon_scale)]
    skipped = {w.label: reason for w in chosen if (reason := refusal(model, w))}
    accepted = [w for w in chosen if w.label not in skipped]
    if not accepted:
        raise ValueError(f"{label} refuses every window of {set_name!r}: {skipped}")
    forecasts: dict[str, list[Forecast]] = {}
    seconds: dict[str, float] = {}
    runs = (
        {label: False}
        if model.max_season is None
        else {f"{label} (m given)": True, f"{label} (m detected)": False}
    )
    for who, season_given in runs.items():
        started = time.perf_counter()
        forecasts[who] = served_forecasts(model, accepted, season_given)
        seconds[who] = time.perf_counter() - started
    for method in baselines:
        started = time.perf_counter()
        forecasts[method] = [baseline_forecast(method, w) for w in accepted]
        seconds[method] = time.perf_counter() - started
        logger.info("%s on %d series of %s: %.1f s", method, len(accepted), set_name, seconds[method])
    for combiner, season_given in CANDIDATES.items() if with_candidates else ():
        started = time.perf_counter()
        forecasts[combiner] = [candidate_forecast(w, season_given) for w in accepted]
        seconds[combiner] = time.perf_counter() - started
    if plot is not None:
        plot_forecasts(plot, accepted, forecasts, f"{label} on {set_name} series")
    series: dict[str, Any] = {}
    for index, w in enumerate(accepted):
        scale, naive_mase = reference(w)
        series[w.label] = {
            "group": w.series.group,
            "source": w.series.source,
            "season": w.series.season,
            "horizon": w.horizon,
            "history": len(w.history),
            "mase_scale": scale,
            "seasonal_naive_mase": naive_mase,
            "forecasters": {
                who: scores(w, made[index], naive_mase, scale) for who, made in forecasts.items()
            },
        }
    return {
        "protocol": describe(names, sample) | {"origins": origins, "horizon_scale": horizon_scale},
        "model": label,
        "forecasters": list(forecasts),
        "series": series,
        "skipped": skipped,
        "summary": {who: summaries(series, who) for who in forecasts},
        "seconds": seconds,
    }


PLOTTED = 6
"""How many series the picture shows: the first of each frequency group, then the next ones."""


def plot_forecasts(
    path: Path, accepted: Sequence[Window], forecasts: dict[str, list[Forecast]], title: str
) -> None:
    """The served model's forecasts (its first run) and AutoETS's, when it ran, on `PLOTTED` series."""
    from training import plots

    shown = [next(iter(forecasts)), *(["AutoETS"] if "AutoETS" in forecasts else [])]
    order = sorted(range(len(accepted)), key=lambda i: [w.series.group for w in accepted[:i]].count(
        accepted[i].series.group))[:PLOTTED]  # fmt: skip
    panels = [
        {
            "name": f"{accepted[i].series.name} ({accepted[i].series.group}, m={accepted[i].series.season})",
            "history": accepted[i].history,
            "truth": accepted[i].truth,
            "forecasts": {who: (f.mean, f.lower, f.upper) for who in shown for f in [forecasts[who][i]]},
        }
        for i in order
    ]
    plots.real_forecasts(path, panels, title)


def summaries(series: dict[str, Any], who: str) -> dict[str, dict[str, float]]:
    """`who`'s summary per frequency group (in FREQUENCIES' order) and over all series ("all")."""
    result = {}
    for group in [*FREQUENCIES, "all"]:
        chosen = [s for s in series.values() if group in (s["group"], "all")]
        if chosen:
            values = sum(s["horizon"] for s in chosen)
            goal = COVERAGE_GOAL if group == "all" else GROUP_COVERAGE_GOAL
            result[group] = summary([s["forecasters"][who] for s in chosen]) | {
                "values": values,
                "calibrated_in_goal": calibrated_chance(values, LEVEL, *goal),
            }
    return result


def describe(names: Sequence[str], sample: int | None) -> dict[str, Any]:
    return {
        "set": "+".join(names),
        "series": [series for name in names for series in SETS[name]],
        "sample": sample,
        "groups": {g: {"season": f.season, "horizon": f.horizon} for g, f in FREQUENCIES.items()},
        "max_history": MAX_HISTORY,
        "level": LEVEL,
        "levels": list(LEVELS),
        "worse": WORSE,
        "coverage_goal": COVERAGE_GOAL,
        "group_coverage_goal": GROUP_COVERAGE_GOAL,
        "calibrated_in_goal": f"the chance that exactly calibrated {LEVEL:g} % bands, each value missed "
        "independently, cover a share of the held-out values within the goal (coverage_goal over all "
        "series, group_coverage_goal in a group)",
        "mase_scale": "in-sample seasonal naive MAE, lag m (lag 1 when the history is shorter than 2m)",
        "relative_mase": "MASE / the seasonal naive forecast's MASE on the same window",
        "summary": "geometric mean of relative MASE; mean MASE; mean coverage at each level; share of "
        f"series with relative MASE > {WORSE}",
        "long_seasons": f"m > {MAX_ETS_SEASON}: AutoETS and AutoARIMA fit MSTL's seasonally adjusted series",
    }


def run(
    sets: str | Sequence[str],
    model_dir: Path,
    name: str,
    version: str | None,
    baselines: Sequence[str],
    sample: int | None,
    out: Path | None,
    **options: Any,
) -> dict[str, Any]:
    """The CLI's `--real`: evaluate (`options` as `evaluate_real` takes them), print both tables, write
    the JSON report to `out`."""
    report = evaluate_real(sets, model_dir, name, version, baselines, sample, **options)
    label, cut = report["model"], report["protocol"]
    set_name = cut["set"]
    suffix = "".join(f"_{k}{cut[k]}" for k in ("origins", "horizon_scale") if cut[k] > 1)
    out = out or Path("reports") / f"real_{set_name}{suffix}_{label.replace(' ', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{set_name}: {len(report['series'])} windows; relative MASE / 95 % coverage per window\n")
    print(per_series_markdown(report))
    print(markdown(report))
    print(f"JSON report: {out}")
    return report
