"""The real-like series generator (training.series_data): its layout, its determinism, the kinds and
hints it draws, and the spread of lengths and scales a scale-free forecaster must meet."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from training.series_data import (
    HINT_SHARE,
    KINDS,
    PERIODS,
    SHORT_RANGE,
    SHORT_SHARE,
    SINE,
    SeriesDraw,
    describe,
    real_like_batch,
    seasonal,
)

LARGE = 2000
SEASONAL_KINDS = {"seasonal", "multiplicative", "double_seasonal"}


@pytest.fixture(scope="module")
def large() -> SeriesDraw:
    """One draw of `LARGE` rows at the default context (1024) and horizon (128)."""
    return real_like_batch(np.random.default_rng(0), LARGE)


def observed_lengths(draw: SeriesDraw) -> np.ndarray:
    """Each row's history length: from its first observed value to the end."""
    first = np.argmax(draw.mask > 0, axis=1)
    return draw.mask.shape[1] - first


def test_shapes_and_dtypes() -> None:
    draw = real_like_batch(np.random.default_rng(1), 24, context_length=200, horizon=30)
    assert draw.history.shape == draw.mask.shape == (24, 200)
    assert draw.future.shape == (24, 30)
    assert draw.season.shape == (24, 1)
    assert all(array.dtype == np.float32 for array in (draw.history, draw.mask, draw.future, draw.season))
    assert len(draw.kind) == 24 and set(draw.kind) <= set(KINDS) | {SINE}


def test_histories_are_right_aligned_with_zero_padding_and_few_interior_gaps(large: SeriesDraw) -> None:
    assert set(np.unique(large.mask)) == {0.0, 1.0}
    assert np.all(large.history[large.mask == 0] == 0.0), "padding and missing values must be 0.0"
    assert np.all(large.mask[:, -1] == 1.0), "the newest value is always observed"
    lengths = observed_lengths(large)
    columns = np.arange(large.mask.shape[1])[None, :]
    inside = columns >= (large.mask.shape[1] - lengths)[:, None]
    assert np.all(large.mask[~inside] == 0.0)
    gaps = (inside & (large.mask == 0)).sum(axis=1)
    assert gaps.max() <= 3
    assert 0.02 <= np.mean(gaps > 0) <= 0.09  # about 5 % of rows have missing values


def test_one_seed_gives_one_batch() -> None:
    first, second, other = (
        real_like_batch(np.random.default_rng(seed), 64, context_length=300, horizon=20) for seed in (7, 7, 8)
    )
    for name in ("history", "mask", "future", "season"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.kind == second.kind
    assert not np.array_equal(first.history, other.history)


def test_every_described_kind_appears_in_a_large_draw_at_about_its_share(large: SeriesDraw) -> None:
    kinds = describe()["kinds"]
    assert set(kinds) == set(KINDS) | {SINE}
    counts = {name: large.kind.count(name) for name in kinds}
    for name, entry in kinds.items():
        assert counts[name] > 0, name
        assert abs(counts[name] / LARGE - entry["share"]) < 0.04, (name, counts[name])


def test_hints_are_the_main_period_unknown_or_one(large: SeriesDraw) -> None:
    kinds = np.array(large.kind)
    hint = large.season[:, 0]
    assert np.all(hint[kinds == SINE] == 0.0), "sine rows are hinted unknown"
    not_sine = kinds != SINE
    assert abs(np.mean(hint[not_sine] > 0) - HINT_SHARE) < 0.05
    plain = ~np.isin(kinds, [*SEASONAL_KINDS, "counts", SINE])
    assert set(np.unique(hint[plain])) == {0.0, 1.0}
    assert set(np.unique(hint[np.isin(kinds, list(SEASONAL_KINDS))])) <= {0.0, *map(float, PERIODS)}
    seasonal_rows = hint >= 2
    # A hinted period is one of which the history holds at least one and a half seasons.
    assert np.all(1.5 * hint[seasonal_rows] <= observed_lengths(large)[seasonal_rows])


def test_hinted_period_is_the_lag_at_which_the_history_repeats(large: SeriesDraw) -> None:
    """The median |x_t - x_{t-m}| of a history is smaller at the hinted m than at m - 1 and m + 1 for most
    rows with three seasons or more (noise, trends and outliers make a few rows exceptions)."""
    lengths = observed_lengths(large)
    wins = []
    for row in np.flatnonzero(large.season[:, 0] >= 2):
        period = int(large.season[row, 0])
        if lengths[row] < 3 * period:
            continue
        x = large.history[row, -lengths[row] :].astype(np.float64)

        def spread(lag: int, x: np.ndarray = x) -> float:
            return float(np.median(np.abs(x[lag:] - x[:-lag])))

        wins.append(spread(period) < min(spread(period - 1), spread(period + 1)))
    assert len(wins) > 100
    assert np.mean(wins) > 0.75


@pytest.mark.parametrize("period", sorted(PERIODS))
def test_a_season_without_noise_repeats_at_its_period(period: int) -> None:
    rng = np.random.default_rng(period)
    for _ in range(20):
        values = seasonal(rng, 4 * period, period)
        lag_corr = np.corrcoef(values[period:], values[:-period])[0, 1]
        assert lag_corr > 0.9, (period, lag_corr)


def test_short_histories_and_long_ones_are_both_drawn(large: SeriesDraw) -> None:
    lengths = observed_lengths(large)
    assert lengths.min() >= SHORT_RANGE[0]
    assert abs(np.mean(lengths <= SHORT_RANGE[1]) - SHORT_SHARE) < 0.04
    assert np.mean(lengths >= 512) > 0.12  # log-uniform above the short range: about 17 % of rows
    assert 1000 <= lengths.max() <= 1024


def test_every_value_is_finite(large: SeriesDraw) -> None:
    assert np.isfinite(large.history).all() and np.isfinite(large.future).all()


def test_scales_span_orders_of_magnitude_and_some_levels_are_negative(large: SeriesDraw) -> None:
    """Every kind made in unit scale (all but multiplicative, counts and intermittent ones, which carry
    their own) gets a level and scale; together they span more than five orders of magnitude."""
    placed = [row for row, name in enumerate(large.kind) if name == SINE or KINDS[name].placed]
    observed = [large.history[row][large.mask[row] > 0] for row in placed]
    typical = np.array([np.median(np.abs(values)) for values in observed])
    assert typical.min() < 0.1 and typical.max() > 1e4
    assert np.log10(typical.max() / typical.min()) > 5
    assert np.mean([np.all(values < 0) for values in observed]) > 0.05


def test_counts_are_non_negative_integers_and_multiplicative_series_positive(large: SeriesDraw) -> None:
    kinds = np.array(large.kind)
    for name in ("counts", "intermittent"):
        rows = kinds == name
        values = np.concatenate([large.history[rows], large.future[rows]], axis=1)
        assert np.all(values >= 0) and np.all(values == np.round(values)), name
    intermittent = large.history[kinds == "intermittent"][large.mask[kinds == "intermittent"] > 0]
    assert np.mean(intermittent == 0) > 0.3
    rows = kinds == "multiplicative"
    assert np.all(large.future[rows] > 0)


def test_sine_share_sets_the_share_of_sine_rows() -> None:
    assert SINE not in real_like_batch(np.random.default_rng(2), 200, 128, 16, sine_share=0.0).kind
    only_sine = real_like_batch(np.random.default_rng(2), 20, 128, 16, sine_share=1.0)
    assert set(only_sine.kind) == {SINE} and np.all(only_sine.season == 0.0)


def test_describe_is_json_and_its_shares_add_up() -> None:
    description = json.loads(json.dumps(describe()))
    assert description["hint_share"] == HINT_SHARE
    assert sum(kind["share"] for kind in description["kinds"].values()) == pytest.approx(1.0)
    assert describe(sine_share=0.3)["kinds"][SINE]["share"] == 0.3


@pytest.mark.parametrize(
    "arguments", [{"batch": 0}, {"context_length": 8}, {"horizon": 0}, {"sine_share": 1.5}]
)
def test_bad_arguments_say_what_to_pass(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="pass batch ≥ 1"):
        real_like_batch(np.random.default_rng(0), **{"batch": 4, **arguments})
