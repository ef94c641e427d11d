"""The served forecaster (`series_gru`) keeps the service's promises, run by ONNX Runtime as served:
batched equals alone, a·y + b gives a·ŷ + b, a constant gives that constant, left padding and a missing
value are ignored, and the season hint reaches the graph. Its export matches the eager network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.repository import newest_version
from service.series import pad_left
from training import series_data, series_train
from training.evaluate_real import reference
from training.export import onnx_session
from training.real_series import CATALOGUE, window
from training.series_net import BacktestGRU
from training.series_train import NAME

REPOSITORY = Path(__file__).resolve().parents[2] / "models" / "series_gru"
MODEL = newest_version(REPOSITORY.parent, "series_gru")  # the version served
PATCH = json.loads((MODEL / "metadata.json").read_text())["config"]["patch_size"]


@pytest.fixture(scope="module")
def session():  # type: ignore[no-untyped-def]
    return onnx_session(MODEL / "model.onnx", threads=1)


def run(session, rows: list[np.ndarray], seasons: list[float]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    values, mask = pad_left([r.astype(np.float32) for r in rows], PATCH)
    season = np.array(seasons, dtype=np.float32)[:, None]
    mean, std = session.run(["mean", "std"], {"series": values, "mask": mask, "season": season})
    return mean, std


def monthly(length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (
        100
        + 0.3 * t
        + 8 * np.sin(2 * np.pi * t / 12)
        + 3 * np.cos(4 * np.pi * t / 12)
        + rng.normal(size=length)
    )


def test_a_series_gets_the_same_forecast_alone_and_batched_beside_longer_ones(session) -> None:  # type: ignore[no-untyped-def]
    rows = [
        monthly(40, 0),
        monthly(300, 1),
        np.cumsum(np.random.default_rng(2).normal(size=1024)),
        monthly(17, 3),
    ]
    seasons = [12.0, 0.0, 1.0, 0.0]
    mean, std = run(session, rows, seasons)
    for i, (row, season) in enumerate(zip(rows, seasons, strict=True)):
        alone_mean, alone_std = run(session, [row], [season])
        np.testing.assert_allclose(mean[i], alone_mean[0], rtol=1e-4, atol=1e-4 * np.abs(row).max())
        np.testing.assert_allclose(std[i], alone_std[0], rtol=1e-4, atol=1e-4 * np.abs(row).max())


@pytest.mark.parametrize(("a", "b"), [(3.0, 50.0), (-2.0, 0.0), (1e-3, -7.0)])
def test_a_scaled_and_shifted_series_gets_the_scaled_and_shifted_forecast(
    session, a: float, b: float
) -> None:  # type: ignore[no-untyped-def]
    rows = [monthly(120, 4), np.cumsum(np.random.default_rng(5).normal(size=200)) + 20]
    mean, std = run(session, rows, [12.0, 0.0])
    moved_mean, moved_std = run(session, [a * r + b for r in rows], [12.0, 0.0])
    for i, row in enumerate(rows):
        size = np.abs(row).max()
        np.testing.assert_allclose(moved_mean[i], a * mean[i] + b, atol=2e-3 * abs(a) * size + 1e-4 * abs(b))
        np.testing.assert_allclose(moved_std[i], abs(a) * std[i], rtol=2e-3, atol=1e-3 * abs(a) * size)


def test_a_constant_series_is_forecast_as_that_constant(session) -> None:  # type: ignore[no-untyped-def]
    mean, std = run(session, [np.full(50, 7.25), np.full(800, -3.0)], [0.0, 12.0])
    np.testing.assert_allclose(mean[0], 7.25, rtol=1e-6)
    np.testing.assert_allclose(mean[1], -3.0, rtol=1e-6)
    assert np.all(np.isfinite(std)) and np.all(std >= 0) and np.all(std < 1e-3)


def test_a_missing_value_is_ignored_and_left_padding_leaks_nothing(session) -> None:  # type: ignore[no-untyped-def]
    row = monthly(96, 6)
    gap = row.copy()
    gap[50] = np.nan  # pad_left masks it as it masks padding
    mean, _ = run(session, [row, gap], [12.0, 12.0])
    assert np.all(np.isfinite(mean[1]))
    scale = np.abs(np.diff(row)).mean()
    assert np.abs(mean[1] - mean[0]).mean() < 0.5 * scale  # one value of 96 moves the forecast little
    values, mask = pad_left([row.astype(np.float32)], PATCH)
    wider_values = np.concatenate([np.zeros((1, 64), np.float32), values], axis=1)
    wider_mask = np.concatenate([np.zeros((1, 64), np.float32), mask], axis=1)
    season = np.array([[12.0]], dtype=np.float32)
    plain = session.run(["mean"], {"series": values, "mask": mask, "season": season})[0]
    wider = session.run(["mean"], {"series": wider_values, "mask": wider_mask, "season": season})[0]
    np.testing.assert_allclose(wider, plain, rtol=1e-5, atol=1e-4)


def test_the_season_hint_reaches_the_graph(session) -> None:  # type: ignore[no-untyped-def]
    # A season of 7 that a 12-step hint contradicts: the hint changes the forecast.
    t = np.arange(140)
    row = 10 + 5 * np.sin(2 * np.pi * t / 7) + np.random.default_rng(7).normal(scale=0.2, size=140)
    mean, _ = run(session, [row, row, row], [7.0, 0.0, 12.0])
    truth = 10 + 5 * np.sin(2 * np.pi * np.arange(140, 140 + 14) / 7)
    assert np.abs(mean[0, :14] - truth).mean() < 0.6
    np.testing.assert_allclose(mean[1, :14], mean[0, :14], atol=0.3)  # detected: the same period
    assert not np.allclose(mean[2], mean[0], atol=1e-3)


def eager_network() -> BacktestGRU:
    """The served version's network in eager torch, as its metadata configures it."""
    config = json.loads((MODEL / "metadata.json").read_text())["config"]
    network = BacktestGRU(
        patch_size=config["patch_size"],
        hidden_size=config["hidden_size"],
        max_horizon=config["max_horizon"],
        context_length=config["context_length"],
        window=config["window"],
    )
    network.load_state_dict(torch.jit.load(str(MODEL / "model.pt"), map_location="cpu").state_dict())
    return network.eval()


def test_the_harmonic_does_not_compete_with_well_under_two_of_its_cycles(session) -> None:  # type: ignore[no-untyped-def]
    """US retail employment, the 66 months up to 2011 (the recession and the recovery): the
    periodogram's peak settles on a single wave over the fall and the recovery, whose backtest has seen
    its own test values. Allowed to compete, it takes most of the weight and forecasts a second fall."""
    held = window(CATALOGUE["us_employment.retail_trade"], origin=2)
    values, mask = pad_left([held.history.astype(np.float32)], PATCH)
    inputs = (torch.from_numpy(values), torch.from_numpy(mask), torch.tensor([[12.0]]))
    network = eager_network()
    with torch.no_grad():
        weights = network.classical(*inputs)[0][0]
        network.min_cycles = 0.0  # the rule off, as up to v5
        unruled = network.classical(*inputs)[0][0]
    harmonic = network.harmonic_index
    assert weights[harmonic] == 0 and unruled[harmonic] > 0.5, (weights, unruled)
    mean, _ = run(session, [held.history], [12.0])
    scale, naive_mase = reference(held)
    assert np.abs(mean[0, : held.horizon] - held.truth).mean() / scale < 1.5 * naive_mase


def test_a_history_of_two_cycles_still_gets_the_sinusoid(session) -> None:  # type: ignore[no-untyped-def]
    """Two periods of a wave, as the README sends it: the frequency's estimate may fall a little short
    of two cycles, and the rule leaves room for that."""
    wave = np.array([0, 0.4, 0.7, 0.9, 1, 0.9, 0.7, 0.4, 0, -0.4, -0.7, -0.9, -1, -0.9, -0.7, -0.4] * 3)
    mean, std = run(session, [wave[:32]], [0.0])
    assert np.abs(mean[0, :16] - wave[32:]).mean() < 0.05 and std[0, 0] < 0.1, (mean[0, :4], std[0, :4])


def test_the_export_matches_the_eager_network() -> None:
    network = eager_network()
    scripted = torch.jit.load(str(MODEL / "model.pt"), map_location="cpu")
    draw = series_data.real_like_batch(np.random.default_rng(11), 8, 1024, 128)
    inputs = [torch.from_numpy(a) for a in (draw.history, draw.mask, draw.season)]
    with torch.no_grad():
        eager_mean, eager_std = network(*inputs)
        script_mean, script_std = scripted(*inputs)
    onnx_mean, onnx_std = onnx_session(MODEL / "model.onnx").run(
        ["mean", "std"], {"series": draw.history, "mask": draw.mask, "season": draw.season}
    )
    size = float(np.abs(draw.history).max())
    for other in (script_mean.numpy(), onnx_mean):
        np.testing.assert_allclose(other, eager_mean.numpy(), atol=1e-4 * size)
    for other in (script_std.numpy(), onnx_std):
        np.testing.assert_allclose(other, eager_std.numpy(), atol=1e-4 * size)


def test_every_version_of_the_same_weights_and_graph_settings_forecasts_alike() -> None:
    """v2 is v1's learned weights in a faster graph of the same arithmetic: the same answers. (v4, v5 and
    v6 have v3's weights in graphs of other settings: another candidate, other weights, the harmonic's
    rule; the graph's settings in the metadata tell them apart.)"""
    draw = series_data.real_like_batch(np.random.default_rng(12), 16, 1024, 128)
    feeds = {"series": draw.history, "mask": draw.mask, "season": draw.season}
    answers: dict[tuple[str, str], list[list[np.ndarray]]] = {}
    for folder in REPOSITORY.iterdir():
        document = json.loads((folder / "metadata.json").read_text())
        weights = document["training"].get("weights_from", f"series_gru/{folder.name}")
        graph = json.dumps(document["config"]["graph"], sort_keys=True)
        answers.setdefault((weights, graph), []).append(
            onnx_session(folder / "model.onnx").run(["mean", "std"], feeds)
        )
    assert any(len(same) > 1 for same in answers.values()), "no two versions share their weights"
    for same in answers.values():
        for mean, std in same[1:]:
            for got, first in ((mean, same[0][0]), (std, same[0][1])):
                np.testing.assert_allclose(got, first, rtol=1e-5, atol=1e-5 * np.abs(first).max())


@pytest.mark.slow  # two exports: seconds of torch
def test_a_dry_run_trains_and_weights_from_it_export_the_same_forecaster(tmp_path: Path) -> None:
    series_train.main(["--dry-run", "--out", str(tmp_path), "--version", "1"])
    series_train.main(
        ["--dry-run", "--out", str(tmp_path), "--version", "2", "--weights-from", str(tmp_path / NAME / "1")]
    )
    trained, copied = (json.loads((tmp_path / NAME / v / "metadata.json").read_text()) for v in ("1", "2"))
    assert trained["training"]["recipe"]["dry_run"] and "weights_from" not in trained["training"]
    assert copied["training"] == trained["training"] | {"weights_from": f"{NAME}/1"}
    assert copied["metrics"]["parity_max_relative_difference"] < 1e-5
    draw = series_data.real_like_batch(np.random.default_rng(13), 8, 1024, 128)
    feeds = {"series": draw.history, "mask": draw.mask, "season": draw.season}
    first, second = (
        onnx_session(tmp_path / NAME / v / "model.onnx").run(["mean", "std"], feeds) for v in ("1", "2")
    )
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_weights_of_another_shape_are_refused_with_what_differs() -> None:
    network = BacktestGRU(hidden_size=32)  # the committed versions have hidden 64
    expected = r"other shapes than this recipe's network: gru\.weight_ih_l0 \(192, 32\) \(this network: \(96"
    with pytest.raises(SystemExit, match=expected):
        series_train.learned_from(network, MODEL)
