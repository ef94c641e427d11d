"""Forecaster v2 (`models/sine_gru/2`): its in-graph fits, the promises the service makes about every
forecaster (padding-free batching, affine equivariance, constants forecast exactly), and protocol v2's
targets re-measured on the committed model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.series import pad_left, recent_window
from training import harmonics
from training.evaluate_forecast import (
    V2_SETS,
    evaluate_v2,
    missed_targets,
    seasonal_naive_v2,
    seed_curve_mae,
)
from training.export import onnx_session
from training.networks import HarmonicGRU

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def v2_dir(models_dir: Path) -> Path:
    directory = models_dir / "sine_gru" / "2"
    assert (directory / "metadata.json").is_file(), (
        f"{directory} is missing: train and export it with `python -m training.forecast --out models`"
    )
    return directory


@pytest.fixture(scope="module")
def v2_config(v2_dir: Path) -> dict:
    return json.loads((v2_dir / "metadata.json").read_text())["config"]


def _forecast(session: object, histories: list[np.ndarray], context: int) -> tuple[np.ndarray, np.ndarray]:
    values, mask = pad_left([recent_window(h, context) for h in histories], 8)
    mean, std = session.run(["mean", "std"], {"series": values, "mask": mask})  # type: ignore[attr-defined]
    return mean, std


# --- the in-graph fits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("period", [4.0, 5.3, 11.0, 37.7, 100.0, 250.0])
def test_the_periodogram_peak_finds_a_sines_period(period: float) -> None:
    length = 1024
    t = np.arange(length)
    y = np.sin(2 * np.pi * t / period + 0.3) + 0.002 * t
    values, mask = (torch.from_numpy(a) for a in pad_left([y.astype(np.float32)], 8))
    steps = harmonics.relative_steps(values.shape[1], values)
    line = harmonics.fit_line(values, mask, steps)
    grid = torch.arange(1.0 / length, 1.0 / 2.5, 1.0 / (4 * length))
    frequency = harmonics.periodogram_peak(
        line.residual, mask, steps, line, grid, torch.linspace(-1.0, 1.0, 17)
    )
    assert float(frequency) == pytest.approx(1.0 / period, abs=2e-6)
    fit = harmonics.fit_sinusoid(line.residual, mask, steps, line, frequency, 32)
    ahead = length - 1 + np.arange(1, 33)
    truth = np.sin(2 * np.pi * ahead / period + 0.3) + 0.002 * ahead
    forecast = (line.level + line.slope * (torch.arange(1.0, 33.0) - line.t_mean) + fit.future).numpy()[0]
    np.testing.assert_allclose(forecast, truth, atol=2e-3)


def test_an_untrained_network_keeps_the_promises() -> None:
    """Padding-free, affine-equivariant, constants exact: by construction, before any training."""
    torch.manual_seed(0)
    network = HarmonicGRU(hidden_size=16, max_horizon=32, context_length=256).eval()
    rng = np.random.default_rng(3)
    y = (np.sin(np.arange(200) * 2 * np.pi / 13) + 0.01 * np.arange(200)).astype(np.float32)
    windows = [rng.standard_normal(n).astype(np.float32) for n in (16, 256, 77)]
    with torch.no_grad():
        alone = [t.numpy() for t in network(*(torch.from_numpy(a) for a in pad_left([y], 8)))]
        batched = [
            t.numpy()
            for t in network(*(torch.from_numpy(a) for a in pad_left([windows[0], y, *windows[1:]], 8)))
        ]
        moved = [t.numpy() for t in network(*(torch.from_numpy(a) for a in pad_left([1000 * y + 5000], 8)))]
        constant = network(*(torch.from_numpy(a) for a in pad_left([np.full(40, -7.5, np.float32)], 8)))
    for one, many in zip(alone, batched, strict=True):
        np.testing.assert_allclose(many[1], one[0], rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(moved[0], 1000 * alone[0] + 5000, rtol=0, atol=1000 * 1e-3)
    np.testing.assert_allclose(moved[1], 1000 * alone[1], rtol=1e-3)
    np.testing.assert_allclose(constant[0].numpy(), -7.5, rtol=0, atol=1e-5)
    assert np.isfinite(constant[1].numpy()).all()


# --- the committed model -------------------------------------------------------------------------------


def test_v2_describes_itself_and_v1_stays(v2_dir: Path, v2_config: dict, models_dir: Path) -> None:
    metadata = json.loads((v2_dir / "metadata.json").read_text())
    assert metadata["version"] == "2" and metadata["task"] == "forecasting"
    assert v2_config["context_length"] == 1024 and v2_config["patch_size"] == 8
    assert metadata["training"]["family"] == {"period_range": [4.0, 256.0], "noise_range": [0.0, 0.2]}
    assert metadata["training"]["dry_run"] is False and metadata["training"]["seconds"] > 0
    protocol = metadata["metrics"]["protocol_v2"]
    for row in ("model", "seasonal_naive", "auto_ets", "sine_gru_v1"):
        assert set(protocol[row]) >= set(V2_SETS), f"metadata.json records no {row} row on every set"
    assert protocol["missed_targets"] == []
    v1 = json.loads((models_dir / "sine_gru" / "1" / "metadata.json").read_text())
    assert v1["version"] == "1" and v1["config"]["context_length"] == 256


def test_v2_keeps_the_service_promises(v2_dir: Path, v2_config: dict) -> None:
    session = onnx_session(v2_dir / "model.onnx")
    context = v2_config["context_length"]
    rng = np.random.default_rng(11)
    y = (np.sin(np.arange(600) * 2 * np.pi / 23) + 0.01 * np.arange(600)).astype(np.float32)
    (mean,), (std,) = _forecast(session, [y], context)
    (mean_big,), (std_big,) = _forecast(
        session, [(1000 * y.astype(np.float64) + 1e6).astype(np.float32)], context
    )
    np.testing.assert_allclose(mean_big, 1000 * mean + 1e6, rtol=0, atol=1000 * 2e-3)
    np.testing.assert_allclose(std_big, 1000 * std, rtol=2e-3)
    others = [(rng.standard_normal(n) * 3 + 1).astype(np.float32) for n in (16, 4096, 77, 1024, 300)]
    means, stds = _forecast(session, [others[0], y, *others[1:]], context)
    scale = max(1.0, float(np.abs(mean).max()))
    np.testing.assert_allclose(means[1], mean, rtol=0, atol=TOLERANCE * scale)
    np.testing.assert_allclose(stds[1], std, rtol=0, atol=TOLERANCE * scale)
    for level in (0.0, 5.5, -3e4):
        (constant,), (spread,) = _forecast(session, [np.full(64, level, dtype=np.float32)], context)
        assert np.isfinite(constant).all() and np.isfinite(spread).all()
        np.testing.assert_allclose(constant, level, rtol=1e-5, atol=1e-5)


def test_v2_onnx_and_torchscript_agree(v2_dir: Path, v2_config: dict) -> None:
    session = onnx_session(v2_dir / "model.onnx")
    scripted = torch.jit.load(str(v2_dir / "model.pt"), map_location="cpu")
    rng = np.random.default_rng(5)
    series = [np.cumsum(rng.normal(size=n)).astype(np.float32) for n in (16, 40, 256, 1000, 3000)]
    values, mask = pad_left([recent_window(s, v2_config["context_length"]) for s in series], 8)
    expected = session.run(["mean", "std"], {"series": values, "mask": mask})
    with torch.no_grad():
        actual = [t.numpy() for t in scripted(torch.from_numpy(values), torch.from_numpy(mask))]
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=TOLERANCE, atol=TOLERANCE * max(1.0, float(np.abs(e).max())))


def test_v2_meets_protocol_v2_targets(v2_dir: Path, v2_config: dict) -> None:
    """Re-measured on protocol v2's held-out sets (200 series each, history 1024); printed, then judged."""
    path, context, patch = v2_dir / "model.onnx", v2_config["context_length"], v2_config["patch_size"]
    report = evaluate_v2(path, context, patch)
    seed_mae = seed_curve_mae(path, context, patch)
    naive = seasonal_naive_v2()
    print(f"\n{'set':<8} {'MAE':>8} {'MASE':>8} {'cov80':>7} {'cov95':>7} {'naive MASE':>11}")
    for name, metrics in report.items():
        print(
            f"{name:<8} {metrics['mae']:8.3f} {metrics['mase']:8.3f} {metrics['coverage_80']:7.3f} "
            f"{metrics['coverage_95']:7.3f} {naive[name]['mase']:11.3f}"
        )
    print(f"seed curve MAE {seed_mae:.4f}")
    recorded = json.loads((v2_dir / "metadata.json").read_text())["metrics"]["protocol_v2"]["model"]
    for name in V2_SETS:
        assert recorded[name]["mae"] == pytest.approx(report[name]["mae"], rel=1e-3)
        if name != "unseen":
            assert report[name]["mase"] < naive[name]["mase"]
    assert missed_targets(report, seed_mae) == []
