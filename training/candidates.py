"""Classical forecasters and a backtest combiner, in numpy, each expressible as fixed tensor operations.

A study for a forecaster of real series that an exported graph can hold: nothing here runs a
per-series iterative optimiser. Every piece is a closed form, a least-squares fit, or a recurrence
with fixed weights (exponential smoothing is a linear recurrent cell) run over a small fixed grid of
smoothing constants in parallel, the grid point picked by its in-sample one-step squared error.

Candidates (`candidate_paths`), each a point forecast over the horizon:

- `naive`, `seasonal_naive` (lag m), `drift` (the line through the first and last value);
- `ses`, `holt_damped`, `theta` (simple exponential smoothing plus half the least-squares slope), on
  the seasonally adjusted series when m > 1: seasonal indices by classical decomposition (a centred
  moving average of length m, the detrended values averaged per phase over the last `INDEX_CYCLES`
  seasons), added back to the forecast;
- the same three on the log scale (`log_*`, multiplicative seasonality) when the series is positive;
- `harmonic`: a line plus the first `HARMONICS` harmonics of m and the periodogram's strongest
  frequency, fitted by least squares to the last `HARMONIC_WINDOW` values.

The combiner (`forecast`) backtests every candidate on the history's own end (forecast the last h
observed values from the values before them, at up to `ORIGINS` origins h apart), keeps the `TOP`
candidates with the smallest backtest MAE and averages them with inverse-MAE weights. Its 95 %
interval is the combination's backtest errors, pooled as e² / step (a random walk's variance grows
with the step), scaled by √step and `WIDTH`. When m is None it is detected (`detect_season`).
"""

from __future__ import annotations

import numpy as np

SES_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
HOLT_ALPHAS = (0.1, 0.3, 0.6, 0.9)
HOLT_BETAS = (0.02, 0.1, 0.3)
HOLT_PHIS = (0.8, 0.9, 0.98)
INDEX_CYCLES = 6
"""Seasonal indices average the detrended values of at most this many of the latest seasons."""
HARMONICS = 3
HARMONIC_WINDOW = 256
ORIGINS = 4
"""The candidates are weighed by their backtest MAE at this many origins (the latest)."""
SPREAD_ORIGINS = 8
"""The interval is scaled by the combination's backtest errors at this many origins."""
TOP = 3
WIDTH = 2.25
"""The interval's widening of the backtest spread, calibrated on the validation set (at 1.0 it covered
0.70 of the held-out values there: the last window's errors exceed the backtest's)."""
GROWTH = 0.5
"""The interval grows as step ** GROWTH (a random walk's √step)."""
Z95 = 1.959963984540054
MIN_PERIOD = 4
MAX_PERIOD = 256
MIN_AUTOCORRELATION = 0.3
"""A period is detected only where the differenced series' autocorrelation reaches this."""


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, beta, phi) per grid point: the SES points (no trend) first, then damped Holt's."""
    holt = np.array(np.meshgrid(HOLT_ALPHAS, HOLT_BETAS, HOLT_PHIS, indexing="ij")).reshape(3, -1)
    ses = np.array([SES_ALPHAS, np.zeros(len(SES_ALPHAS)), np.zeros(len(SES_ALPHAS))])
    alpha, beta, phi = np.concatenate([ses, holt], axis=1)
    return alpha, beta, phi


def smoothing(y: np.ndarray, h: int) -> dict[str, np.ndarray]:
    """The best SES and the best damped Holt forecast (h steps), each chosen on its grid by the
    in-sample one-step squared error; every grid point runs in parallel as one linear recurrence."""
    alpha, beta, phi = _grid()
    trending = beta > 0
    level = np.full(alpha.shape, y[0])
    slope = np.where(trending, (y[min(len(y) - 1, 4)] - y[0]) / max(1, min(len(y) - 1, 4)), 0.0)
    sse = np.zeros(alpha.shape)
    for value in y[1:]:
        predicted = level + phi * slope
        error = value - predicted
        sse += error * error
        level = predicted + alpha * error
        slope = phi * slope + alpha * beta * error
    steps = np.arange(1, h + 1)[:, None]
    damping = np.where(trending, np.cumsum(phi[None, :] ** steps, axis=0), 0.0)  # (h, grid)
    paths = level[None, :] + damping * slope[None, :]
    ses, holt = ~trending, trending
    best_ses = np.flatnonzero(ses)[np.argmin(sse[ses])]
    best_holt = np.flatnonzero(holt)[np.argmin(sse[holt])]
    a = alpha[best_ses]
    n = len(y)
    t = np.arange(n) - (n - 1) / 2.0
    ols_slope = float(t @ (y - y.mean()) / max(float(t @ t), 1e-12))
    theta = paths[:, best_ses] + ols_slope / 2.0 * (steps[:, 0] - 1 + 1 / a - (1 - a) ** n / a)
    return {"ses": paths[:, best_ses], "holt_damped": paths[:, best_holt], "theta": theta}


def seasonal_indices(y: np.ndarray, m: int) -> np.ndarray | None:
    """Classical additive decomposition's m seasonal indices (phase p = position mod m, summing to 0),
    or None when the history holds fewer than two seasons."""
    n = len(y)
    if m < 2 or n < 2 * m:
        return None
    kernel = np.full(m + 1, 1.0 / m) if m % 2 == 0 else np.full(m, 1.0 / m)
    if m % 2 == 0:
        kernel[0] = kernel[-1] = 0.5 / m
    trend = np.convolve(y, kernel, mode="valid")
    start = (len(kernel) - 1) // 2
    detrended = y[start : start + len(trend)] - trend
    positions = np.arange(start, start + len(trend))
    keep = positions >= max(start, n - start - INDEX_CYCLES * m)
    phases = positions[keep] % m
    sums = np.bincount(phases, weights=detrended[keep], minlength=m)
    counts = np.bincount(phases, minlength=m)
    indices = sums / np.maximum(counts, 1)
    return indices - indices.mean()


def harmonic(y: np.ndarray, h: int, m: int) -> np.ndarray:
    """A line, the first harmonics of m and the periodogram's strongest frequency, fitted by least
    squares to the last `HARMONIC_WINDOW` values and continued."""
    values = y[-HARMONIC_WINDOW:]
    n = len(values)
    t = np.arange(n + h, dtype=np.float64) - (n - 1)
    columns = [np.ones(n + h), t / n]
    frequencies = [k / m for k in range(1, min(HARMONICS, m // 2) + 1)] if m > 1 else []
    line = np.polyfit(t[:n], values, 1)
    power = np.abs(np.fft.rfft(values - np.polyval(line, t[:n]))) ** 2
    power[: 3 if n >= 12 else 1] = 0.0  # slower than a third of the window: the line's business
    frequencies.append(float(np.argmax(power)) / n)
    for f in frequencies:
        columns += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
    design = np.stack(columns, axis=1)
    coef = np.linalg.lstsq(design[:n], values, rcond=None)[0]
    return design[n:] @ coef


def _adjusted(y: np.ndarray, h: int, m: int, prefix: str) -> dict[str, np.ndarray]:
    """SES, damped Holt and theta on the seasonally adjusted `y`, the indices added back."""
    indices = seasonal_indices(y, m)
    if indices is None:
        return {prefix + k: v for k, v in smoothing(y, h).items()}
    n = len(y)
    adjusted = y - indices[np.arange(n) % m]
    future = indices[np.arange(n, n + h) % m]
    return {prefix + k: v + future for k, v in smoothing(adjusted, h).items()}


def candidate_paths(y: np.ndarray, h: int, m: int, positive: bool) -> dict[str, np.ndarray]:
    """Every candidate's point forecast (h values) from history `y` with season length `m`; the log-scale
    ones only when `positive` (the whole history, not only `y`, is above zero)."""
    n = len(y)
    lag = m if n >= m > 1 else 1
    paths = {
        "naive": np.full(h, y[-1]),
        "seasonal_naive": np.resize(y[-lag:], h),
        "drift": y[-1] + np.arange(1, h + 1) * (y[-1] - y[0]) / max(n - 1, 1),
        **_adjusted(y, h, m, ""),
        "harmonic": harmonic(y, h, m),
    }
    if positive:
        paths.update({k: np.exp(v) for k, v in _adjusted(np.log(y), h, m, "log_").items()})
    return paths


def detect_season(y: np.ndarray) -> int:
    """The season length: the lag in MIN_PERIOD…min(MAX_PERIOD, n/2) where the autocorrelation of the
    differenced series peaks, if it reaches MIN_AUTOCORRELATION; else 1. A season's multiples echo it,
    so the peak's shortest whole fraction (peak / k) whose autocorrelation is within 10 % of the
    peak's is taken instead."""
    diffs = np.diff(y)
    top = min(MAX_PERIOD, len(y) // 2)
    if top < MIN_PERIOD or not np.any(diffs != diffs[0]):
        return 1
    centred = diffs - diffs.mean()
    spectrum = np.fft.rfft(centred, 2 * len(centred))
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: top + 1]
    acf = acf / acf[0]
    lags = np.arange(MIN_PERIOD, top + 1)
    peak = float(acf[lags].max())
    if peak < MIN_AUTOCORRELATION:
        return 1
    period = int(lags[np.argmax(acf[lags])])
    for divisor in range(period // MIN_PERIOD, 1, -1):
        shorter = round(period / divisor)
        if acf[shorter] >= 0.9 * peak:
            return shorter
    return period


def season_length(y: np.ndarray, m: int | None) -> int:
    """The season length used for history `y`: `m` when given (None: detected), 1 when the history
    holds fewer than two seasons."""
    season = detect_season(y) if m is None else max(int(m), 1)
    return season if len(y) >= 2 * season else 1


def _scale(y: np.ndarray) -> float:
    scale = float(np.abs(np.diff(y)).mean()) if len(y) > 1 else 0.0
    return scale if scale > 0 else max(float(np.abs(y).mean()), 1.0)


def backtest(y: np.ndarray, h: int, m: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Candidates' names, their scaled backtest MAE (mean over origins) and their backtest errors
    (origins, candidates, h): each forecasts the h values after an origin from the values before it."""
    positive = bool(np.all(y > 0))
    min_train = max(2 * m, 8)
    last = len(y) - (SPREAD_ORIGINS + 1) * h
    origins = [n for n in range(len(y) - h, last, -h) if n >= min_train][:SPREAD_ORIGINS]
    if not origins:
        origins = [max(len(y) - h, 2)]
    errors = []
    names: list[str] = []
    for origin in origins:
        truth = y[origin : origin + h]
        paths = candidate_paths(y[:origin], h, m, positive)
        if not names:
            names = list(paths)
        errors.append(np.stack([np.resize(paths[k], h)[: len(truth)] - truth for k in names])[:, :h])
    width = min(e.shape[1] for e in errors)
    stacked = np.stack([e[:, :width] for e in errors])
    return names, np.abs(stacked[:ORIGINS]).mean(axis=(0, 2)) / _scale(y), stacked


def weights(mae: np.ndarray) -> np.ndarray:
    """Inverse-MAE weights over the TOP candidates with the smallest backtest MAE, zero elsewhere."""
    best = np.argsort(mae, kind="stable")[:TOP]
    result = np.zeros(len(mae))
    result[best] = 1.0 / np.maximum(mae[best], 1e-9)
    return result / result.sum()


def forecast(history: np.ndarray, h: int, m: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The combination's forecast of the h values after `history`, and its 95 % lower and upper bounds.
    `m` is the season length (1: none); None detects it from the history."""
    y = np.asarray(history, dtype=np.float64)
    if y.ndim != 1 or len(y) < 3 or not np.isfinite(y).all():
        raise ValueError(f"expected a 1-D history of at least 3 finite values; got shape {y.shape}")
    if h < 1:
        raise ValueError(f"the horizon must be at least 1 step; got {h}")
    season = season_length(y, m)
    names, mae, errors = backtest(y, h, season)
    w = weights(mae)
    paths = candidate_paths(y, h, season, bool(np.all(y > 0)))
    mean = np.stack([paths[k] for k in names], axis=1) @ w
    combined = errors.transpose(0, 2, 1) @ w  # (origins, steps)
    steps = np.arange(1, combined.shape[1] + 1)
    spread = np.sqrt(np.mean(combined**2 / steps ** (2 * GROWTH)) + (0.01 * _scale(y)) ** 2)
    half = WIDTH * Z95 * spread * np.arange(1, h + 1) ** GROWTH
    return mean, mean - half, mean + half


def chosen(history: np.ndarray, h: int, m: int | None) -> dict[str, float]:
    """The combiner's weight on each candidate for this history (for reports)."""
    y = np.asarray(history, dtype=np.float64)
    names, mae, _ = backtest(y, h, season_length(y, m))
    return {k: float(v) for k, v in zip(names, weights(mae), strict=True) if v > 0}
