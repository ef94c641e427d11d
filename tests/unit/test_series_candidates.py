"""The in-graph classical forecasts (`training.series_candidates`) against the numpy study they follow
(`training.candidates`) and against the recurrences written out step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import candidates
from training import series_candidates as classical

WIDTH = 256


def right_aligned(rows: list[np.ndarray], width: int = WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    values = np.zeros((len(rows), width), dtype=np.float32)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        values[i, -len(row) :] = row
        mask[i, -len(row) :] = 1.0
    return torch.from_numpy(values), torch.from_numpy(mask)


def seasonal_rows(rng: np.random.Generator) -> list[np.ndarray]:
    rows = []
    for period, length in ((12, 200), (4, 60), (7, 256), (24, 120), (5, 33)):
        t = np.arange(length)
        shape = rng.normal(size=period)
        rows.append(
            (shape[t % period] * 3 + 0.02 * t + rng.normal(scale=0.3, size=length)).astype(np.float32)
        )
    return rows


def test_the_detected_season_is_the_numpy_studys() -> None:
    rows = seasonal_rows(np.random.default_rng(0))
    rows.append(np.cumsum(np.random.default_rng(1).normal(size=180)).astype(np.float32))  # no season
    values, mask = right_aligned(rows)
    detected = classical.SeasonDetector(WIDTH)(values, mask, mask.sum(dim=1, keepdim=True))
    expected = [candidates.detect_season(row.astype(np.float64)) for row in rows]
    assert detected[:, 0].long().tolist() == expected
    assert expected[:4] == [12, 4, 7, 24]  # the rows' own periods (the numpy study finds them)


def test_seasonal_indices_are_classical_decompositions() -> None:
    rows = seasonal_rows(np.random.default_rng(2))
    periods = [12, 4, 7, 24, 5]
    values, mask = right_aligned(rows)
    season = torch.tensor(periods, dtype=torch.float32)[:, None]
    indices = classical.seasonal_indices(values, mask, season)
    for row, (history, m) in enumerate(zip(rows, periods, strict=True)):
        expected = candidates.seasonal_indices(history.astype(np.float64), m)
        assert expected is not None
        # numpy's phase is position mod m; the graph's counts back from the newest value.
        by_phase_back = expected[(len(history) - 1 - np.arange(m)) % m]
        np.testing.assert_allclose(indices[row, :m].numpy(), by_phase_back, atol=1e-4)
        assert torch.all(indices[row, m:] == 0)


def test_too_short_a_history_gets_no_seasonal_indices() -> None:
    values, mask = right_aligned([np.arange(20, dtype=np.float32)])
    indices = classical.seasonal_indices(values, mask, torch.tensor([[12.0]]))
    assert torch.all(indices == 0)


def test_each_grid_point_is_the_smoothing_recurrence() -> None:
    rng = np.random.default_rng(3)
    history = np.cumsum(rng.normal(size=90)).astype(np.float64)
    alpha, beta, phi = classical.smoothing_grid()
    transition, gain = classical.recurrence(alpha, beta, phi)
    chunked = classical.Chunked(transition, gain, phi, classical.BLOCK).double()
    shifted = history - history[0]
    window = torch.zeros(1, WIDTH, dtype=torch.float64)
    window[0, -len(shifted) :] = torch.from_numpy(shifted)
    predicted, state = chunked(window)
    predicted = predicted[0].permute(1, 0, 2).reshape(len(alpha), WIDTH)  # (G, W)
    for g in (0, 3, 4, 12, len(alpha) - 1):
        a, b, p = float(alpha[g]), float(beta[g]), float(phi[g])
        level, slope = 0.0, 0.0
        predictions = []
        for y in shifted:  # error-correction form, as the textbooks write it
            predicted_y = level + p * slope
            predictions.append(predicted_y)
            error = y - predicted_y
            level, slope = predicted_y + a * error, p * slope + a * b * error
        # The block matrices are stored in float32: agreement to their rounding.
        np.testing.assert_allclose(predicted[g, -len(shifted) :].numpy(), predictions, rtol=1e-6, atol=1e-6)
        assert torch.all(predicted[g, : -len(shifted)] == 0)  # nothing before the window's values
        assert float(state[0, g, 0]) == pytest.approx(level, rel=1e-6, abs=1e-6)
        assert float(state[0, g, 1]) == pytest.approx(slope, rel=1e-6, abs=1e-6)


def test_the_autocorrelation_from_the_spectrum_is_the_lagged_sum() -> None:
    rows = seasonal_rows(np.random.default_rng(5))
    values, mask = right_aligned(rows)
    detector = classical.SeasonDetector(WIDTH).double()
    diffs = np.diff(values.double().numpy(), axis=1) * mask[:, 1:].numpy() * mask[:, :-1].numpy()
    for row, length in enumerate(len(r) for r in rows):
        centred = diffs[row, -(length - 1) :] - diffs[row, -(length - 1) :].mean()
        expected = [float(centred[lag:] @ centred[: max(len(centred) - lag, 0)]) for lag in range(129)]
        padded = np.zeros(WIDTH - 1)
        padded[-(length - 1) :] = centred
        spectrum = torch.from_numpy(padded)[None, :] @ detector.spectrum
        half = detector.inverse.shape[0]
        power = spectrum[:, :half] ** 2 + spectrum[:, half:] ** 2
        np.testing.assert_allclose((power @ detector.inverse)[0].numpy(), expected, atol=1e-5 * expected[0])


def test_fill_carries_the_last_value_forward_and_marks_the_span() -> None:
    values = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0, 5.0, 0.0]])
    mask = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    filled, span = classical.fill(values, mask)
    assert filled.tolist() == [[0.0, 0.0, 3.0, 3.0, 3.0, 5.0, 5.0]]
    assert span.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]]


def test_candidates_follow_the_series_under_a_scale_and_a_shift() -> None:
    rows = seasonal_rows(np.random.default_rng(4))
    values, mask = right_aligned(rows)
    season = torch.tensor([[12.0], [4.0], [7.0], [24.0], [5.0]])
    paths = classical.Classical(WIDTH, 32)

    def forecast(v: torch.Tensor) -> torch.Tensor:
        filled, span = classical.fill(v, mask)
        first = classical.gather_rows(filled, WIDTH - span.sum(dim=1, keepdim=True).long())
        return paths((filled - first) * span, span, mask, season) + first[:, :, None]

    plain = forecast(values)
    moved = forecast((values * -3.0 + 100.0) * mask)
    np.testing.assert_allclose(moved.numpy(), (plain * -3.0 + 100.0).numpy(), rtol=1e-4, atol=1e-2)
    # Seasonal naive repeats the last season exactly.
    np.testing.assert_allclose(plain[0, 1, :12].numpy(), rows[0][-12:], rtol=1e-6)


def test_seasonal_drift_continues_a_trending_season_and_is_naive_without_one() -> None:
    t = np.arange(120)
    shape = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, -6.0, 5.0, 3.0, -5.0, 8.0])
    trending = (shape[t % 12] + 0.5 * t).astype(np.float32)  # a season on a line: exactly predictable
    walk = np.cumsum(np.random.default_rng(6).normal(size=120)).astype(np.float32)
    values, mask = right_aligned([trending, walk])
    horizon = 30
    paths = classical.Classical(WIDTH, horizon)(values, mask, mask, torch.tensor([[12.0], [1.0]]))
    slot = classical.CANDIDATES.index("seasonal_drift")
    future = np.arange(120, 120 + horizon)
    np.testing.assert_allclose(paths[0, slot].numpy(), shape[future % 12] + 0.5 * future, rtol=1e-5)
    np.testing.assert_allclose(paths[1, slot].numpy(), np.full(horizon, walk[-1]), rtol=1e-6)
