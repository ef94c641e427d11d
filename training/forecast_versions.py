"""Versions of the sine forecaster side by side, for `python -m training.evaluate_forecast`: forecasts of
each version on held-out series of the short, family and long sets, and each version beside AutoETS and
seasonal naive on the same series."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.series import interval
from training.evaluate_forecast import (
    EVAL_HORIZON,
    V2_HISTORY,
    auto_ets_v2,
    draw_set,
    evaluate_v2,
    run_onnx,
    seasonal_naive_v2,
)


def plot_versions(path: Path, model_root: Path, versions: Sequence[str]) -> None:
    """Forecasts of each version, with 95 % bands, on a held-out series of the short, family and long
    sets (the one whose period is nearest 8, 32 and 160 steps)."""
    from training import plots

    panels = []
    for name, period in (("short", 8.0), ("family", 32.0), ("long", 160.0)):
        data = draw_set(name)
        row = int(np.argmin(np.abs(data.period - period)))
        history, truth = data.values[row, :V2_HISTORY], data.values[row, V2_HISTORY:]
        forecasts = []
        for version in versions:
            model_dir = model_root / version
            config = json.loads((model_dir / "metadata.json").read_text())["config"]
            mean, std = run_onnx(
                model_dir / "model.onnx", [history], config["context_length"], config["patch_size"]
            )
            mean, std = mean[0, :EVAL_HORIZON], std[0, :EVAL_HORIZON]
            lower, upper = interval(mean, std, 95.0)
            mae = float(np.abs(mean - truth).mean())
            forecasts.append(
                (f"v{version} (reads {config['context_length']}): MAE {mae:.2f}", mean, lower, upper)
            )
        shown = history[-max(96, int(3 * data.period[row])) :]
        panels.append((f"{name}: P = {data.period[row]:.1f}", shown, truth, forecasts))
    plots.forecast_comparison(path, panels, 95.0)


def with_auto_ets(
    root: Path, labels: Sequence[str], versions: Sequence[str], series: int, first: int
) -> dict[str, Any]:
    """AutoETS, seasonal naive and each version on the first `first` series of each set."""
    subset: dict[str, Any] = {"series_per_set": first}
    for label, version in zip(labels, versions, strict=True):
        config = json.loads((root / version / "metadata.json").read_text())["config"]
        path = root / version / "model.onnx"
        subset[label] = evaluate_v2(path, config["context_length"], config["patch_size"], series, first)
    subset["seasonal_naive"] = seasonal_naive_v2(series, first)
    subset["auto_ets"] = auto_ets_v2(series, first=first)
    return subset
