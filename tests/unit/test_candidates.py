"""The numpy backtest combiner of classical forecasters (training.candidates): exact on the series each
candidate is made for, equivariant to scale and offset, and run by the real-series protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from training import evaluate_forecast
from training.candidates import detect_season, forecast, season_length

RNG_SEED = 20261124


def seasonal_walk(n: int, m: int, seed: int = RNG_SEED) -> np.ndarray:
    """A random walk plus a fixed seasonal pattern of period m, crossing zero."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0.0, 3.0, m)
    walk = np.cumsum(rng.normal(0.0, 1.0, n))
    return walk - walk.mean() + pattern[np.arange(n) % m]


def test_a_constant_series_is_forecast_as_that_constant() -> None:
    mean, lower, upper = forecast(np.full(60, 7.25), 10, 4)
    np.testing.assert_allclose(mean, 7.25, rtol=1e-12)
    assert np.all(lower <= mean) and np.all(mean <= upper)


@pytest.mark.parametrize(("a", "b"), [(3.0, 5.0), (-0.5, 3.0), (1e3, -2e3)])
def test_a_linear_map_of_the_history_maps_the_forecast_and_its_bounds(a: float, b: float) -> None:
    y = seasonal_walk(160, 12)
    assert y.min() < 0 < y.max() and (a * y + b).min() < 0  # the log-scale candidates stay out
    mean, lower, upper = forecast(y, 18, 12)
    mapped, mapped_lower, mapped_upper = forecast(a * y + b, 18, 12)
    tolerance = 1e-7 * abs(a) * np.abs(y).max()
    np.testing.assert_allclose(mapped, a * mean + b, atol=tolerance)
    low, high = (a * lower + b, a * upper + b) if a > 0 else (a * upper + b, a * lower + b)
    np.testing.assert_allclose(mapped_lower, low, atol=tolerance)
    np.testing.assert_allclose(mapped_upper, high, atol=tolerance)


def test_a_positive_series_scaled_is_forecast_scaled() -> None:
    """With the log-scale candidates in play: log(a·y) = log a + log y, so a > 0 still maps through."""
    y = np.exp(0.1 * seasonal_walk(120, 4))
    mean, lower, upper = forecast(y, 8, 4)
    mapped, mapped_lower, mapped_upper = forecast(2.5 * y, 8, 4)
    np.testing.assert_allclose(mapped, 2.5 * mean, rtol=1e-7)
    np.testing.assert_allclose(mapped_lower, 2.5 * lower, rtol=1e-7)
    np.testing.assert_allclose(mapped_upper, 2.5 * upper, rtol=1e-7)


@pytest.mark.parametrize("m", [4, 12])
def test_a_pure_seasonal_series_is_continued_with_its_season(m: int) -> None:
    pattern = np.random.default_rng(m).normal(10.0, 4.0, m)
    y = pattern[np.arange(10 * m) % m]
    mean, lower, upper = forecast(y, 2 * m + 3, m)
    truth = pattern[np.arange(10 * m, 12 * m + 3) % m]
    np.testing.assert_allclose(mean, truth, atol=1e-6 * np.ptp(pattern))
    assert np.all(lower <= truth) and np.all(truth <= upper)


def test_a_linear_trend_is_continued() -> None:
    t = np.arange(80.0)
    mean, _, _ = forecast(3.0 + 0.5 * t, 12, 1)
    np.testing.assert_allclose(mean, 3.0 + 0.5 * np.arange(80.0, 92.0), atol=1e-3)


@pytest.mark.parametrize(("m", "h"), [(1, 6), (4, 8), (12, 18), (None, 13)])
def test_the_interval_holds_the_mean_and_widens_with_the_horizon(m: int | None, h: int) -> None:
    mean, lower, upper = forecast(seasonal_walk(300, 12, seed=h), h, m)
    assert mean.shape == lower.shape == upper.shape == (h,)
    assert np.all(lower < mean) and np.all(mean < upper)
    assert np.all(np.diff(upper - lower) > 0)


def test_the_season_is_detected_on_a_seasonal_series_and_not_on_noise() -> None:
    rng = np.random.default_rng(RNG_SEED)
    seasonal = 5.0 * np.sin(2 * np.pi * np.arange(240) / 12) + rng.normal(0.0, 1.0, 240)
    assert detect_season(seasonal) == 12
    assert detect_season(rng.normal(0.0, 1.0, 240)) == 1
    assert season_length(seasonal[:20], 12) == 1  # fewer than two seasons: none used


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least 3 finite values"):
        forecast(np.array([1.0, np.nan, 2.0, 3.0]), 4, 1)
    with pytest.raises(ValueError, match="horizon must be at least 1"):
        forecast(np.arange(10.0), 0, 1)


def test_the_protocols_candidates_option_gives_finite_metrics(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "report.json"
    evaluate_forecast.main(
        ["--real", "--model-dir", str(models_dir), "--name", "sine_gru", "--version", "2", "--sample", "3",
         "--candidates",
         "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    combiners = ["candidates (m given)", "candidates (m detected)"]
    assert report["forecasters"] == ["sine_gru v2", *combiners]
    assert len(report["series"]) == 3
    for name, scored in report["series"].items():
        for who in combiners:
            numbers = scored["forecasters"][who]
            assert math.isfinite(numbers["mase"]) and numbers["mase"] > 0, (name, who)
            assert 0.0 <= numbers["coverage_80"] <= numbers["coverage_95"] <= 1.0, (name, who)
            assert numbers["fitted"].startswith("m="), (name, who)
        given = scored["forecasters"]["candidates (m given)"]["fitted"]
        assert given.startswith(f"m={scored['season']}:") or given.startswith("m=1:"), name
    for who in combiners:
        assert all(math.isfinite(v) for v in report["summary"][who]["all"].values()), who
