"""Synthetic training series that behave like real ones, for the `series_gru` forecaster.

Each row draws a kind from `KINDS`, composes the behaviours it names (trends, seasons of calendar
periods and non-sinusoidal shapes, noise families, random walks, level shifts, counts), then gets a
random level and scale: values run from about 1e-2 to 1e5, some below zero. A share of the histories
are short, a few hold outliers or missing values; the season hint is the true main period for
`HINT_SHARE` of the rows, 0.0 (unknown) for the rest. Numpy only (torch comes with `sine_series`, on
the first sine row); every value comes from the `rng` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

HINT_SHARE = 0.6
SHORT_SHARE = 0.3
SHORT_RANGE = (16, 60)
MISSING_SHARE = 0.05
OUTLIER_SHARE = 0.1
SHIFT_SHARE = 0.15  # seasonal and trend rows that also get one or two level shifts
BREAK_SHARE = 0.25
"""Rows (not the sine family's) whose future departs from their history: a level shift or a change of slope
somewhere in the horizon, of one to four times the history's mean absolute step (real series do this;
a forecaster trained without it learns bands too narrow for them)."""
SCALE_RANGE = (3e-3, 3e3)  # log-uniform; the level adds up to about 30 scales
LEVELS = {"positive": 0.6, "centred": 0.25, "negative": 0.15}
TREND_SPAN = 96  # a trend's change is drawn over max(history, TREND_SPAN) steps, so short rows stay sane
# Calendar periods and how often each is drawn: quarters, business days, weekdays, months, 4-week
# months, hours, half-hours, weeks, hours of the week, days of the year.
PERIODS = {4: 0.14, 5: 0.08, 7: 0.14, 12: 0.2, 13: 0.04, 24: 0.14, 48: 0.08, 52: 0.08, 168: 0.05, 365: 0.05}
PERIOD_PAIRS = ((24, 168), (48, 336), (7, 365))  # (main, second); the main one is hinted
MIN_SEASONS = 1.5  # a period is drawn only when the history holds this many of its seasons
TRENDS = ("none", "linear", "damped", "exponential", "random_walk")
SHAPES = ("harmonics", "spike", "square")
NOISES = ("gaussian", "ar1", "arma11", "heteroscedastic", "student_t")


@dataclass(frozen=True)
class SeriesDraw:
    """A batch of right-aligned histories, what follows them, and the season hint."""

    history: np.ndarray  # (batch, context_length) float32, newest value last, left-padded with 0.0
    mask: np.ndarray  # (batch, context_length) float32: 1.0 observed, 0.0 padding or a missing value
    future: np.ndarray  # (batch, horizon) float32: the next `horizon` values after the history
    season: np.ndarray  # (batch, 1) float32: the main period, 1.0 when none, 0.0 when not hinted
    kind: list[str]  # the kind each row was drawn from


@dataclass(frozen=True)
class Series:
    """One row, history then future, and its main seasonal period (1 when none, 0 when unknown)."""

    values: np.ndarray
    period: int


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _one_of(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _drift(rng: np.random.Generator) -> float:  # up to ±0.2 per step for half the rows
    return rng.uniform(-0.2, 0.2) if rng.random() < 0.5 else 0.0


def _pick(rng: np.random.Generator, weights: dict[Any, float]) -> Any:
    p = np.array(list(weights.values()), dtype=np.float64)
    return list(weights)[int(rng.choice(len(p), p=p / p.sum()))]


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """x_t = phi·x_{t-1} + e_t from x = 0, as a convolution with phi^k cut where it falls below 1e-6."""
    taps = min(len(shocks), 1 + int(np.log(1e-6) / np.log(max(abs(phi), 1e-6))))
    return np.convolve(shocks, phi ** np.arange(taps))[: len(shocks)]


# Behaviours, in unit scale (a season's amplitude and a trend's change are of order 1).


def trend(rng: np.random.Generator, n: int, length: int, shape: str) -> np.ndarray:
    """A trend of `shape` over n steps whose change over the history is up to ±5 units."""
    u = np.arange(n) / max(length, TREND_SPAN)
    change = rng.uniform(-5.0, 5.0)
    if shape == "linear":
        return change * u
    if shape == "damped":  # the slope decays; the curve flattens towards a level
        rate = rng.uniform(1.0, 6.0)
        return change * -np.expm1(-rate * u) / -np.expm1(-rate)
    if shape == "exponential":
        growth = rng.uniform(0.5, 2.0)
        return change * np.expm1(growth * u) / np.expm1(growth)
    if shape == "random_walk":  # a slowly wandering level
        return np.cumsum(rng.standard_normal(n)) * rng.uniform(0.02, 0.2)
    return np.zeros(n)


def season_profile(rng: np.random.Generator, period: int) -> np.ndarray:
    """One season of `period` steps, zero mean and peak 2 (a sinusoid's sd would be 1.4): several
    harmonics with random amplitudes, one sharp peak per season, or a square-ish wave."""
    phase = np.arange(period) / period
    shape = _one_of(rng, SHAPES)
    if shape == "harmonics":
        order = np.arange(1, min(period // 2, 6) + 1)[:, None]
        amplitude = rng.uniform(0.0, 1.0, (len(order), 1)) / order ** rng.uniform(0.0, 1.5)
        amplitude[0] = max(float(amplitude[0, 0]), 0.3)
        wave = (amplitude * np.cos(2 * np.pi * order * phase + rng.uniform(0, 2 * np.pi, order.shape))).sum(0)
    elif shape == "spike":
        distance = (phase - rng.integers(period) / period + 0.5) % 1.0 - 0.5
        width = rng.uniform(0.4, 0.4 + 0.05 * period) / period
        wave = np.exp(-0.5 * (distance / width) ** 2) * rng.choice([-1.0, 1.0], p=[0.2, 0.8])
    else:
        wave = np.tanh(rng.uniform(2.0, 10.0) * np.sin(2 * np.pi * (phase + rng.random())))
    wave = wave - wave.mean()
    return 2.0 * wave / max(float(np.abs(wave).max()), 1e-9)


def seasonal(rng: np.random.Generator, n: int, period: int) -> np.ndarray:
    """A season's profile repeated over n steps from a random phase, its amplitude constant for half
    the rows and slowly evolving (drift and wander of up to about ±50 %) for the rest."""
    values = season_profile(rng, period)[(np.arange(n) + rng.integers(period)) % period]
    if rng.random() < 0.5:
        return values
    wander = np.cumsum(rng.standard_normal(n)) / np.sqrt(n) * rng.uniform(0.0, 0.4)
    return values * np.exp(rng.uniform(-0.5, 0.5) * (np.arange(n) / n - 0.5) + wander)


def noise(rng: np.random.Generator, n: int, sd: float, shape: str, level: np.ndarray) -> np.ndarray:
    """Noise of `shape` with about `sd`; heteroscedastic noise grows 1–5× from the lowest `level` to
    the highest."""
    if shape == "student_t":
        df = rng.uniform(2.5, 6.0)
        return sd * rng.standard_t(df, n) / np.sqrt(df / (df - 2.0))
    shocks = sd * rng.standard_normal(n)
    if shape == "ar1":
        phi = rng.uniform(-0.5, 0.95)
        return _ar1(shocks, phi) * np.sqrt(1.0 - phi * phi)
    if shape == "arma11":
        moving = shocks + rng.uniform(-0.8, 0.8) * np.concatenate([[0.0], shocks[:-1]])
        return _ar1(moving, rng.uniform(-0.5, 0.9)) * 0.6
    if shape == "heteroscedastic":
        span = float(np.ptp(level)) or 1.0
        return shocks * (1.0 + rng.uniform(1.0, 4.0) * (level - level.min()) / span)
    return shocks


def random_noise(rng: np.random.Generator, n: int, level: np.ndarray, high: float = 1.0) -> np.ndarray:
    return noise(rng, n, _log_uniform(rng, 0.03, high), _one_of(rng, NOISES), level)


def level_shifts(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """One or two steps of ±1–4 units inside the history (never on its first or last fifth)."""
    shifts = np.zeros(n)
    for _ in range(int(rng.integers(1, 3))):
        at = int(rng.integers(max(1, length // 5), max(2, length - length // 5)))
        shifts[at:] += rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 4.0)
    return shifts


def main_period(rng: np.random.Generator, length: int) -> int:
    """A calendar period of which the history holds at least `MIN_SEASONS` seasons."""
    fits = {p: w for p, w in PERIODS.items() if p * MIN_SEASONS <= length}
    return int(_pick(rng, fits or {min(PERIODS): 1.0}))


def _with_shifts(rng: np.random.Generator, z: np.ndarray, length: int) -> np.ndarray:
    return z + level_shifts(rng, len(z), length) if rng.random() < SHIFT_SHARE else z


# The kinds: each composes the behaviours above into one row of n = history + horizon values; the
# table's `placed` kinds come out in unit scale and get a random level and scale from `_place`.


def _seasonal(rng: np.random.Generator, n: int, length: int) -> Series:
    period = main_period(rng, length)
    base = trend(rng, n, length, _one_of(rng, TRENDS)) + rng.uniform(0.5, 2.0) * seasonal(rng, n, period)
    return Series(_with_shifts(rng, base + random_noise(rng, n, base), length), period)


def _multiplicative(rng: np.random.Generator, n: int, length: int) -> Series:
    """Log-linear (exponential) growth, damped or none, and a season whose amplitude is proportional to
    the level, built in log space: always positive, in units of its own scale."""
    period = main_period(rng, length)
    log_values = 0.4 * trend(rng, n, length, _one_of(rng, ("none", "linear", "damped")))
    log_values = log_values + rng.uniform(0.05, 0.5) * seasonal(rng, n, period)
    log_values = log_values + random_noise(rng, n, log_values, high=0.15)
    return Series(_log_uniform(rng, 1e-2, 3e4) * np.exp(np.clip(log_values, -12.0, 12.0)), period)


def _double_seasonal(rng: np.random.Generator, n: int, length: int) -> Series:
    """Two periods at once; one period when the history is too short for any pair."""
    pairs = [pair for pair in PERIOD_PAIRS if pair[1] * MIN_SEASONS <= length]
    if not pairs:
        return _seasonal(rng, n, length)
    main, second = pairs[int(rng.integers(len(pairs)))]
    base = trend(rng, n, length, _one_of(rng, TRENDS)) + rng.uniform(0.7, 2.0) * seasonal(rng, n, main)
    base = base + rng.uniform(0.3, 1.5) * seasonal(rng, n, second)
    return Series(base + random_noise(rng, n, base), main)


def _trend_only(rng: np.random.Generator, n: int, length: int) -> Series:
    base = trend(rng, n, length, _one_of(rng, TRENDS[1:4]))
    return Series(_with_shifts(rng, base + random_noise(rng, n, base), length), 1)


def _random_walk(rng: np.random.Generator, n: int, length: int) -> Series:
    """Steps of unit sd, Gaussian or Student-t, with or without a drift."""
    steps = noise(rng, n, 1.0, _one_of(rng, ("gaussian", "student_t")), np.zeros(n))
    return Series(np.cumsum(steps + _drift(rng)), 1)


def _arima(rng: np.random.Generator, n: int, length: int) -> Series:
    """ARIMA(1,1,0): the differences are AR(1), with or without a drift."""
    return Series(np.cumsum(_ar1(rng.standard_normal(n), rng.uniform(-0.6, 0.9)) + _drift(rng)), 1)


def _level_shift(rng: np.random.Generator, n: int, length: int) -> Series:
    shifts = level_shifts(rng, n, length)
    return Series(shifts + random_noise(rng, n, shifts, high=0.5), 1)


def _stationary(rng: np.random.Generator, n: int, length: int) -> Series:
    return Series(noise(rng, n, 1.0, _one_of(rng, ("ar1", "arma11")), np.zeros(n)), 1)


def _counts(rng: np.random.Generator, n: int, length: int) -> Series:
    """Poisson counts of a positive intensity (0.3–200 on average), seasonal for half the rows."""
    period = main_period(rng, length) if rng.random() < 0.5 else 1
    log_rate = np.log(_log_uniform(rng, 0.3, 200.0)) + 0.3 * trend(rng, n, length, "damped")
    if period > 1:
        log_rate = log_rate + rng.uniform(0.2, 0.8) * seasonal(rng, n, period)
    return Series(rng.poisson(np.exp(np.clip(log_rate, -10.0, 10.0))).astype(np.float64), period)


def _intermittent(rng: np.random.Generator, n: int, length: int) -> Series:
    """Intermittent demand: a demand in 5–50 % of the steps, each of 1 + Poisson(0–10) units."""
    demand = rng.random(n) < rng.uniform(0.05, 0.5)
    return Series(demand * (1.0 + rng.poisson(rng.uniform(0.0, 10.0), n)), 1)


def _sine(rng: np.random.Generator, n: int, length: int) -> Series:
    """The existing forecaster's family (`training.data.sine_series`, V2 ranges); period 0, unknown."""
    from training.data import V2_FAMILY, sine_series

    return Series(sine_series(rng, 1, n, V2_FAMILY).values[0].astype(np.float64), 0)


def _place(rng: np.random.Generator, z: np.ndarray, length: int) -> np.ndarray:
    """`z` with unit sd over its history, a random level (history above, around or below 0) and scale."""
    z = (z - z[:length].mean()) / max(float(z[:length].std()), 1e-6)
    level, offset = _pick(rng, LEVELS), _log_uniform(rng, 0.1, 30.0)
    loc = {"positive": offset - z[:length].min(), "negative": -offset - z[:length].max()}
    return _log_uniform(rng, *SCALE_RANGE) * (z + loc.get(level, rng.uniform(-1.0, 1.0)))


@dataclass(frozen=True)
class Kind:
    share: float  # of the rows that are not sine rows
    make: Callable[[np.random.Generator, int, int], Series]
    behaviour: str
    placed: bool = True  # made in unit scale: `_place` gives it a level and scale


KINDS: dict[str, Kind] = {
    "seasonal": Kind(0.22, _seasonal, "trend (any) + additive season of a calendar period + noise (any)"),
    "multiplicative": Kind(0.14, _multiplicative, "log-linear/damped growth × season ∝ level × noise", False),
    "double_seasonal": Kind(0.10, _double_seasonal, "24+168, 48+336 or 7+365 as fits + trend + noise"),
    "trend": Kind(0.10, _trend_only, "linear, damped or exponential trend + noise, no season"),
    "random_walk": Kind(0.12, _random_walk, "random walk, Gaussian or Student-t steps, drift or none"),
    "arima": Kind(0.08, _arima, "ARIMA(1,1,0), drift or none"),
    "level_shift": Kind(0.06, _level_shift, "one or two level shifts + noise"),
    "stationary": Kind(0.06, _stationary, "AR(1) or ARMA(1,1) around a level"),
    "counts": Kind(0.07, _counts, "Poisson counts of a positive intensity, half seasonal; unscaled", False),
    "intermittent": Kind(0.05, _intermittent, "intermittent demand, mostly zeros; unscaled", False),
}
SINE = "sine"
SINE_KIND = Kind(0.0, _sine, "training.data.sine_series, V2 family; hinted 0 (unknown)")
NO_OUTLIERS = ("counts", "intermittent")  # kinds that keep their integers: no outliers


def kind_shares(sine_share: float = 0.15) -> dict[str, float]:
    """Each kind's share of the rows: `sine_share` for the sine family, the table's for the rest."""
    rest = (1.0 - sine_share) / sum(kind.share for kind in KINDS.values())
    return {**{name: rest * kind.share for name, kind in KINDS.items()}, SINE: sine_share}


def history_lengths(rng: np.random.Generator, batch: int, context_length: int) -> np.ndarray:
    """`SHORT_SHARE` of the rows in `SHORT_RANGE`, the rest log-uniform from there to `context_length`."""
    low, high = SHORT_RANGE[0], min(SHORT_RANGE[1], context_length)
    short = rng.integers(low, high + 1, batch)
    if context_length <= high:
        return short
    longer = np.exp(rng.uniform(np.log(high + 1), np.log(context_length + 1), batch)).astype(int)
    return np.where(rng.random(batch) < SHORT_SHARE, short, np.minimum(longer, context_length))


def future_break(rng: np.random.Generator, values: np.ndarray, length: int) -> None:
    """Add a level shift or a change of slope, starting at a random step of the future, to `values`."""
    steps = np.abs(np.diff(values[:length]))
    size = float(steps.mean()) if len(steps) and steps.mean() > 0 else max(float(np.abs(values).mean()), 1e-3)
    horizon = len(values) - length
    start = length + int(rng.integers(0, horizon))
    magnitude = rng.uniform(1.0, 4.0) * size * rng.choice((-1.0, 1.0))
    after = np.arange(len(values) - start, dtype=np.float64)
    if rng.random() < 0.5:
        values[start:] += magnitude
    else:
        values[start:] += magnitude * (after + 1) / max(horizon / 4, 1.0)


def _add_outliers(rng: np.random.Generator, values: np.ndarray, length: int) -> None:
    """A few values inside the history (never the last) moved by 4–10 robust sds of its differences."""
    steps = np.diff(values[:length])
    sd = max(1.4826 * float(np.median(np.abs(steps - np.median(steps)))), 1e-3 * float(np.abs(values).max()))
    at = rng.choice(length - 1, size=min(int(rng.integers(1, 4)), length - 1), replace=False)
    values[at] += rng.choice([-1.0, 1.0], len(at)) * rng.uniform(4.0, 10.0, len(at)) * sd


def real_like_batch(
    rng: np.random.Generator,
    batch: int,
    context_length: int = 1024,
    horizon: int = 128,
    sine_share: float = 0.15,
) -> SeriesDraw:
    """`batch` rows of real-like series drawn from `rng`: histories right-aligned in `context_length`
    (left-padded with 0.0, mask 0.0), the `horizon` values after each, the season hint and the kind."""
    if batch < 1 or horizon < 1 or context_length < SHORT_RANGE[0] or not 0.0 <= sine_share <= 1.0:
        raise ValueError(
            f"got batch={batch}, horizon={horizon}, context_length={context_length}, "
            f"sine_share={sine_share}; pass batch ≥ 1, horizon ≥ 1, context_length ≥ {SHORT_RANGE[0]} "
            "and 0 ≤ sine_share ≤ 1"
        )
    shares = kind_shares(sine_share)
    names = list(shares)
    kinds = [names[i] for i in rng.choice(len(names), size=batch, p=np.array(list(shares.values())))]
    lengths = history_lengths(rng, batch, context_length)
    history = np.zeros((batch, context_length), np.float32)
    mask = np.zeros((batch, context_length), np.float32)
    future = np.zeros((batch, horizon), np.float32)
    season = np.zeros((batch, 1), np.float32)
    for row, (name, length) in enumerate(zip(kinds, lengths, strict=True)):
        kind = SINE_KIND if name == SINE else KINDS[name]
        series = kind.make(rng, int(length) + horizon, int(length))
        values = _place(rng, series.values, length) if kind.placed else series.values
        if name not in NO_OUTLIERS and rng.random() < OUTLIER_SHARE:
            _add_outliers(rng, values, length)
        if name not in (SINE, *NO_OUTLIERS, "multiplicative") and rng.random() < BREAK_SHARE:
            future_break(rng, values, length)
        history[row, -length:] = values[:length]
        mask[row, -length:] = 1.0
        future[row] = values[length:]
        if rng.random() < HINT_SHARE:
            season[row, 0] = series.period
        if rng.random() < MISSING_SHARE:  # a few interior values: never the first or the last
            gaps = -2 - rng.choice(length - 2, size=int(rng.integers(1, 4)), replace=False)
            history[row, gaps], mask[row, gaps] = 0.0, 0.0
    return SeriesDraw(history, mask, future, season, kinds)


def describe(sine_share: float = 0.15) -> dict[str, Any]:
    """The generator's settings, JSON-able, for the model's metadata.json."""
    shares = kind_shares(sine_share)
    return {
        "generator": "training.series_data.real_like_batch",
        "kinds": {
            **{name: {"share": shares[name], "behaviour": kind.behaviour} for name, kind in KINDS.items()},
            SINE: {"share": shares[SINE], "behaviour": SINE_KIND.behaviour},
        },
        "hint_share": HINT_SHARE,
        "hint": "the main period for hint_share of the rows (1 when none, 0 for sine rows), else 0",
        "short_share": SHORT_SHARE,
        "short_range": list(SHORT_RANGE),
        "longer": "log-uniform from short_range[1] + 1 to context_length",
        "periods": {str(period): weight for period, weight in PERIODS.items()},
        "period_pairs": [list(pair) for pair in PERIOD_PAIRS],
        "min_seasons": MIN_SEASONS,
        "trends": list(TRENDS),
        "season_shapes": list(SHAPES),
        "noises": list(NOISES),
        "scale_range": list(SCALE_RANGE),
        "levels": dict(LEVELS),
        "missing_share": MISSING_SHARE,
        "outlier_share": OUTLIER_SHARE,
        "shift_share": SHIFT_SHARE,
        "future_break_share": BREAK_SHARE,
        "future_break": "a level shift or slope change in the horizon, 1-4 times the mean absolute step",
    }
