"""Forecast accuracy on the evaluation protocol, and the baselines it is compared with (numpy only)."""

from __future__ import annotations

import numpy as np

from service.series import interval


def seasonal_naive(history: np.ndarray, season: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat each history's last season (length `season[i]`) over the horizon."""
    out = np.empty((len(history), horizon), dtype=np.float64)
    for row, (values, m) in enumerate(zip(history, season, strict=True)):
        last = values[-int(m) :]
        out[row] = np.resize(last, horizon)
    return out


def last_value(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(history[:, -1:], horizon, axis=1).astype(np.float64)


def point_metrics(
    history: np.ndarray, truth: np.ndarray, forecast: np.ndarray, season: np.ndarray
) -> dict[str, float]:
    """Mean over series of MAE, RMSE, MASE (in-sample seasonal-naive scale, m = season) and sMAPE (%)."""
    error = forecast - truth
    mae = np.abs(error).mean(axis=1)
    rmse = np.sqrt((error**2).mean(axis=1))
    naive_scale = np.array(
        [np.abs(h[int(m) :] - h[: -int(m)]).mean() for h, m in zip(history, season, strict=True)]
    )
    mase = mae / naive_scale
    smape = 200.0 * (np.abs(error) / (np.abs(truth) + np.abs(forecast) + 1e-12)).mean(axis=1)
    return {
        "mae": float(mae.mean()),
        "rmse": float(rmse.mean()),
        "mase": float(mase.mean()),
        "smape": float(smape.mean()),
    }


def coverage(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, level: float) -> float:
    """The fraction of true values inside the central `level` % interval."""
    lower, upper = interval(mean, std, level)
    return float(((truth >= lower) & (truth <= upper)).mean())
