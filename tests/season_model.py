"""A forecaster whose graph takes a season length hint, exported into a temporary model repository: the
tests' seasonal forecaster until one is committed under models/ (then `season_repository` can hand out
that one instead, and `expected_forecast` its known answers).

Its graph has the inputs `series`, `mask` and `season` (batch, 1) and the outputs `mean` and `std`, like
every forecaster. Its mean is the seasonal naive forecast: step h repeats the value one season before it
(lag `season`), and the last value when the hint is 0 (not given) or 1; its std is 1. So an answer shows
which hint reached the graph, row by row.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEASONAL_MODEL = "seasonal_naive"
CONTEXT_LENGTH = 64
PATCH_SIZE = 4
MAX_HORIZON = 16
MIN_LENGTH = 8
MAX_LENGTH = 256
MAX_SEASON = 24
DEFAULT_MODELS = ("digit_lstm", "series_gru", "sine_gru")
"""The committed models the service needs beside it: its default digit model and forecaster."""


class SeasonalNaive(nn.Module):
    def __init__(self, max_horizon: int) -> None:
        super().__init__()
        self.max_horizon = max_horizon

    def forward(
        self, series: torch.Tensor, mask: torch.Tensor, season: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values = series * mask  # left padding and missing values are 0 already; this keeps `mask` an input
        period = torch.clamp(torch.round(season), min=1.0).long()  # (batch, 1)
        steps = torch.arange(self.max_horizon).unsqueeze(0)  # (1, horizon)
        index = torch.clamp(values.shape[1] - period + torch.remainder(steps, period), min=0)
        mean = torch.gather(values, 1, index)
        return mean, torch.ones_like(mean)


def expected_forecast(history: list[float], season: int | None, horizon: int) -> list[float]:
    """What the model answers for `history` (its last CONTEXT_LENGTH values, at least `season` of them)
    with the hint `season`."""
    window = [float(np.float32(v)) for v in history[-CONTEXT_LENGTH:]]
    lag = max(1, season or 0)
    return [window[len(window) - lag + step % lag] for step in range(horizon)]


def _export(directory: Path) -> None:
    directory.mkdir(parents=True)
    example = (torch.zeros(2, 16), torch.ones(2, 16), torch.zeros(2, 1))
    with warnings.catch_warnings():  # torch calls its TorchScript-based exporter deprecated; it works
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            SeasonalNaive(MAX_HORIZON),
            example,
            str(directory / "model.onnx"),
            dynamo=False,
            input_names=["series", "mask", "season"],
            output_names=["mean", "std"],
            dynamic_axes={
                "series": {0: "batch", 1: "time"},
                "mask": {0: "batch", 1: "time"},
                "season": {0: "batch"},
                "mean": {0: "batch"},
                "std": {0: "batch"},
            },
            opset_version=17,
        )
    content = (directory / "model.onnx").read_bytes()
    tensor = {"dtype": "float32", "shape": ["batch", "time"]}
    metadata = {
        "name": SEASONAL_MODEL,
        "version": "1",
        "task": "forecasting",
        "description": "seasonal naive forecast with lag `season` (the last value for 0 or 1), std 1",
        "config": {
            "context_length": CONTEXT_LENGTH,
            "patch_size": PATCH_SIZE,
            "max_horizon": MAX_HORIZON,
            "min_length": MIN_LENGTH,
            "max_length": MAX_LENGTH,
            "max_season": MAX_SEASON,
        },
        "inputs": [
            {"name": "series", **tensor},
            {"name": "mask", **tensor},
            {"name": "season", "dtype": "float32", "shape": ["batch", 1]},
        ],
        "outputs": [
            {"name": "mean", "dtype": "float32", "shape": ["batch", MAX_HORIZON]},
            {"name": "std", "dtype": "float32", "shape": ["batch", MAX_HORIZON]},
        ],
        "onnx_file": "model.onnx",
        "files": {"model.onnx": {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}},
    }
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2))


def season_repository(models_dir: Path, root: Path) -> Path:
    """A model repository under `root`: the committed default models (linked) and the seasonal one."""
    repository = root / "models"
    repository.mkdir()
    for name in DEFAULT_MODELS:
        (repository / name).symlink_to(models_dir / name, target_is_directory=True)
    _export(repository / SEASONAL_MODEL / "1")
    return repository
