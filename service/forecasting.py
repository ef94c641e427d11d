"""The forecaster: series of different lengths to forecasts with Gaussian prediction intervals.

Windows and padding come from `service.series`, shared with training: each series is cut to its most
recent `context_length` values and the batch is right-aligned and zero-padded on the left, which the
graph ignores exactly. So a series gets the same forecast alone or batched beside longer ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.config import BatchSettings
from service.errors import InvalidInput
from service.repository import ModelArtifact
from service.schemas import DEFAULT_LEVELS, ForecastInput, level_key
from service.series import interval, pad_left, recent_window
from service.served import ServedModel

Moments = np.ndarray
"""A forecast's mean and std, stacked: (2, max_horizon)."""


@dataclass(frozen=True)
class ForecastQuery:
    """One validated series, ready to batch, and what to cut from its forecast."""

    window: np.ndarray
    horizon: int
    levels: tuple[float, ...]
    where: str


class Forecaster(ServedModel[np.ndarray, Moments]):
    """Serves a `forecasting` model: inputs `series` and `mask`, outputs `mean` and `std`."""

    task = "forecasting"
    input_names = ("series", "mask")
    output_names = ("mean", "std")

    def __init__(self, artifact: ModelArtifact, batching: BatchSettings) -> None:
        self.context_length = artifact.config("context_length")
        self.patch_size = artifact.config("patch_size")
        self.max_horizon = artifact.config("max_horizon")
        self.min_length = artifact.config("min_length")
        self.max_length = artifact.config("max_length")
        super().__init__(artifact, batching)

    def prepare(self, items: Sequence[ForecastInput], many: bool) -> list[ForecastQuery]:
        """Check every series against the model's limits; `InvalidInput` lists every problem found."""
        queries, errors = [], []
        for index, item in enumerate(items):
            where = f"inputs[{index}]." if many else ""
            if not self.min_length <= len(item.series) <= self.max_length:
                errors.append({
                    "loc": f"{where}series",
                    "msg": f"has {len(item.series)} values; {self.name} needs {self.min_length} to "
                    f"{self.max_length} (it reads the last {self.context_length})",
                })  # fmt: skip
            if not 1 <= item.horizon <= self.max_horizon:
                errors.append({
                    "loc": f"{where}horizon",
                    "msg": f"is {item.horizon}; {self.name} forecasts 1 to {self.max_horizon} steps",
                })  # fmt: skip
            window = recent_window(item.series, self.context_length)
            queries.append(ForecastQuery(window, item.horizon, tuple(item.levels or DEFAULT_LEVELS), where))
        if errors:
            raise InvalidInput.listing(errors)
        return queries

    def run_batch(self, inputs: list[np.ndarray]) -> list[Moments]:
        values, mask = pad_left(inputs, self.patch_size)
        outputs = self.runtime.run({"series": values, "mask": mask})
        mean, std = outputs["mean"], outputs["std"]
        expected = (len(inputs), self.max_horizon)
        if mean.shape != expected or std.shape != expected:
            raise RuntimeError(f"mean and std have shapes {mean.shape} and {std.shape}, expected {expected}")
        return list(np.stack([mean, std], axis=1))

    def sample_input(self) -> np.ndarray:
        steps = np.arange(self.context_length, dtype=np.float32)
        return np.sin(steps / 8.0).astype(np.float32)

    async def forecast(
        self, queries: list[ForecastQuery], timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """One answer per query, in order, computed in batches with other requests' series."""
        moments = await self.queue.submit_many([q.window for q in queries], timeout_s)
        return [self.answer(q, mean, std) for q, (mean, std) in zip(queries, moments, strict=True)]

    def answer(self, query: ForecastQuery, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
        mean, std = mean[: query.horizon], std[: query.horizon]
        intervals = {}
        for level in query.levels:
            lower, upper = interval(mean, std, level)
            intervals[level_key(level)] = {"lower": lower, "upper": upper}
        bounds = [b for pair in intervals.values() for b in pair.values()]
        if not all(np.isfinite(a).all() for a in [mean, std, *bounds]):
            raise InvalidInput(
                f"{query.where}series: its values are too large for the model's float32 arithmetic "
                "(the forecast overflowed); divide the series by a constant and scale the answer back"
            )
        return {"forecast": mean, "intervals": intervals, "model": self.name, "version": self.version}
