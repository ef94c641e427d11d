"""The forecasting task: series of different lengths to forecasts with Gaussian prediction intervals.

Its input rules are here and nowhere else (`series_problem`, `horizon_problem`, `levels_problem`,
`season_problem`): REST bodies and V2 tensors pass through the same functions, so the same mistake
reads the same on both. The model's limits (lengths, horizon, longest season) come from its metadata.

Windows and padding come from `service.series`, shared with training: each series is cut to its most
recent `context_length` values and the batch is right-aligned and zero-padded on the left, which the
graph ignores exactly. So a series gets the same forecast alone or batched beside longer ones.

A graph may take a third input, `season` (batch, 1): each row's season length hint (0: unknown, the
graph finds the period; 1: no seasonality; m ≥ 2: the period in steps). Its metadata then lists the
input and gives `config.max_season`. The hint travels with its window through the queue (and the
model engine's channel) as the window's last value (`Forecaster.item`), so rows of one batch may have
different hints; for a graph without it, a queued item is the window alone, as it always was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from service.config import BatchSettings
from service.metrics import BatcherMetrics
from service.repository import ModelArtifact, ModelLoadError
from service.runtimes import Runtime
from service.series import interval, pad_left, quantile, recent_window
from service.tasks.base import FLOAT32_MAX, Locate, Problem, ServedModel, TensorSpec, check

DEFAULT_LEVELS = (80.0, 95.0)
MAX_LEVELS = 10
MAX_QUANTILES = 20
OVERFLOW = (
    "its values are too large for the model's float32 arithmetic (the forecast overflowed); divide the "
    "series by a constant and scale the answer back"
)

Moments = np.ndarray
"""A forecast's mean and std, stacked: (2, max_horizon)."""


def levels_problem(levels: Sequence[float]) -> str | None:
    """What is wrong with a list of central interval levels, in percent."""
    if not 1 <= len(levels) <= MAX_LEVELS:
        return f"must list 1 to {MAX_LEVELS} percentages; got {len(levels)}"
    for level in levels:
        if not (math.isfinite(level) and 0 < level < 100):
            return f"each level must be a percentage strictly between 0 and 100; got {level:g}"
        if level < 1:
            return f"levels are percentages: send {level * 100:g}, not {level:g}"
    if len({level_key(level) for level in levels}) != len(levels):
        return "must not repeat a value"
    return None


def quantiles_problem(quantiles: Sequence[float]) -> str | None:
    """What is wrong with a list of quantiles (probabilities strictly between 0 and 1)."""
    if not 1 <= len(quantiles) <= MAX_QUANTILES:
        return f"must list 1 to {MAX_QUANTILES} probabilities; got {len(quantiles)}"
    for q in quantiles:
        if not (math.isfinite(q) and 0 < q < 1):
            hint = f": send {q / 100:g}, not {q:g}" if 1 < q < 100 else ""
            return f"each quantile must be a probability strictly between 0 and 1; got {q:g}{hint}"
    if len({quantile_key(q) for q in quantiles}) != len(quantiles):
        return "must not repeat a value"
    return None


def quantile_key(q: float) -> str:
    """How a quantile names its values in the answer: 0.1 -> "0.1", 0.975 -> "0.975"."""
    return repr(float(q))


def level_key(level: float) -> str:
    """How a level names its interval in the answer: 80 -> "80", 97.5 -> "97.5"."""
    return str(int(level)) if float(level).is_integer() else repr(float(level))


@dataclass(frozen=True)
class SeriesInput:
    """One series to forecast, as a protocol decoded it (not yet checked)."""

    series: np.ndarray
    """Oldest first; NaN marks a missing value."""
    horizon: int
    levels: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None
    season: int | None = None
    """The season length hint; None: not given (the graph finds the period itself)."""


@dataclass(frozen=True)
class ForecastQuery:
    """One checked series, ready to batch, and what to cut from its forecast."""

    window: np.ndarray
    horizon: int
    levels: tuple[float, ...]
    item: int
    quantiles: tuple[float, ...] | None = None
    season: int | None = None


def takes_season(metadata: dict[str, Any]) -> bool:
    """Whether a forecaster's graph takes the `season` input, as its metadata lists its inputs."""
    inputs = metadata.get("inputs")
    return isinstance(inputs, list) and any(isinstance(i, dict) and i.get("name") == "season" for i in inputs)


class Forecaster(ServedModel[np.ndarray, Moments]):
    """Serves a `forecasting` model: inputs `series`, `mask` and, if the graph takes it, `season`;
    outputs `mean` and `std`."""

    task = "forecasting"
    graph_inputs = ("series", "mask")
    graph_outputs = ("mean", "std")

    def __init__(self, artifact: ModelArtifact, batching: BatchSettings) -> None:
        self.context_length = artifact.config("context_length")
        self.patch_size = artifact.config("patch_size")
        self.max_horizon = artifact.config("max_horizon")
        self.min_length = artifact.config("min_length")
        self.max_length = artifact.config("max_length")
        self.max_season = artifact.config("max_season") if takes_season(artifact.metadata) else None
        """The longest season length hint the graph takes; None for a graph without the input."""
        super().__init__(artifact, batching)

    @classmethod
    def load(
        cls, artifact: ModelArtifact, runtime: Runtime, batching: BatchSettings, metrics: BatcherMetrics
    ) -> Self:
        model = super().load(artifact, runtime, batching, metrics)
        if ("season" in runtime.input_names) != (model.max_season is not None):
            listed = "lists" if model.max_season is not None else "does not list"
            raise ModelLoadError(
                f"{artifact.file}: has inputs {runtime.input_names}, but its metadata.json {listed} the "
                "input 'season': list the graph's inputs there as the graph has them, or re-export it"
            )
        return model

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        season = (TensorSpec("season_length", "INT32", (-1, 1), accepted=("INT64",), optional=True),)
        return (
            TensorSpec("series", "FP32", (-1, -1), accepted=("FP64",)),
            TensorSpec("horizon", "INT32", (-1, 1), accepted=("INT64",), optional=True),
            TensorSpec("quantiles", "FP32", (1, -1), accepted=("FP64",), optional=True),
        ) + (season if self.max_season is not None else ())

    def declined_inputs(self) -> dict[str, str]:
        return {} if self.max_season is not None else {"season_length": self._no_season()}

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (
            TensorSpec("mean", "FP32", (-1, -1)),
            TensorSpec("std", "FP32", (-1, -1)),
            TensorSpec("quantiles", "FP32", (-1, -1, -1), optional=True),
        )

    # Input rules.

    def series_problem(self, series: np.ndarray) -> str | None:
        """What is wrong with one series (1-D numbers, oldest first; NaN for a missing value)."""
        observed = series[~np.isnan(series)] if series.dtype.kind == "f" else series
        missing = len(series) - len(observed)
        if len(series) > self.max_length or len(observed) < self.min_length:
            given = f"has {len(series)} values" + (f", {missing} of them missing" if missing else "")
            return (
                f"{given}; {self.name} needs {self.min_length} to {self.max_length} "
                f"(it reads the last {self.context_length})"
            )
        if not np.isfinite(observed).all():
            return "must hold finite numbers: found infinity"
        if float(np.abs(observed).max()) > FLOAT32_MAX:
            return f"values must lie within ±{FLOAT32_MAX:.3g} (float32); rescale the series"
        return None

    def horizon_problem(self, horizon: int) -> str | None:
        if not 1 <= horizon <= self.max_horizon:
            return f"is {horizon}; {self.name} forecasts 1 to {self.max_horizon} steps"
        return None

    def season_problem(self, season: int) -> str | None:
        """What is wrong with a season length hint (an integer: the period in steps, 1 for none)."""
        if self.max_season is None:
            return self._no_season()
        if not 1 <= season <= self.max_season:
            return (
                f"is {season}; {self.name} takes a season length of 1 (no seasonality) to {self.max_season} "
                "steps: leave it out and the model finds the period itself"
            )
        return None

    def _no_season(self) -> str:
        return (
            f"{self.name} takes no season_length; it finds its period itself: leave the field out, or "
            "choose a forecaster whose metadata gives config.max_season (GET /models)"
        )

    def queries(self, inputs: Sequence[SeriesInput]) -> list[ForecastQuery]:
        """Checked inputs (the protocol ran the rules above as it decoded them), cut to the model's
        window."""
        return [
            ForecastQuery(recent_window(given.series, self.context_length), given.horizon,
                          given.levels or DEFAULT_LEVELS, item, given.quantiles, given.season)
            for item, given in enumerate(inputs)
        ]  # fmt: skip

    def tensor_problems(self, arrays: dict[str, np.ndarray]) -> list[Problem]:
        series = arrays["series"]
        if series.ndim != 2 or not len(series):
            return [
                Problem(
                    "series",
                    f"shape is {list(series.shape)}; send [n, length]: n ≥ 1 series of one length, "
                    "oldest value first",
                )
            ]
        problems = []
        for row, values in enumerate(series):
            message = self.series_problem(values)
            if message:
                problems.append(Problem("series", message, row))
        horizon = arrays.get("horizon")
        if horizon is not None:
            values = np.unique(horizon)
            if horizon.size not in (1, len(series)) or len(values) != 1:
                message = (
                    f"holds {horizon.size} values {values[:4].tolist()}: give one horizon, the same for "
                    "every row (shape [n, 1] or [1, 1]); forecast other horizons in other requests"
                )
            else:
                message = self.horizon_problem(int(values[0]))
            if message:
                problems.append(Problem("horizon", message))
        quantiles = arrays.get("quantiles")
        if quantiles is not None:
            message = quantiles_problem(quantiles.ravel().tolist())
            if message:
                problems.append(Problem("quantiles", message))
        season = arrays.get("season_length")
        if season is not None:
            problems += self._season_tensor_problems(season, len(series))
        return problems

    def _season_tensor_problems(self, season: np.ndarray, rows: int) -> list[Problem]:
        """A `season_length` tensor: one hint per row of `series` ([n, 1]), or one for all ([1, 1])."""
        if self.max_season is None:
            return [Problem("season_length", self._no_season())]
        if season.ndim != 2 or season.shape[1] != 1 or season.shape[0] not in (1, rows):
            return [
                Problem(
                    "season_length",
                    f"shape is {list(season.shape)}; send [{rows}, 1] (one hint per row of series) or "
                    "[1, 1] (one for every row)",
                )
            ]
        per_row = season.shape[0] == rows
        problems = []
        for row, value in enumerate(season.ravel().tolist()):
            message = self.season_problem(int(value))
            if message:
                problems.append(Problem("season_length", message, row if per_row else None))
        return problems

    # Inference.

    def item(self, window: np.ndarray, season: int | None) -> np.ndarray:
        """What the queue holds for one series: its window, followed by its season hint (0.0: not given)
        when the graph takes one; `run_batch` splits them again."""
        if self.max_season is None:
            return window
        return np.append(window, np.float32(season or 0))

    def feeds(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of `item`s: the series padded on the left, their mask, and the
        season hints when the graph takes them."""
        season = {}
        if self.max_season is not None:
            season["season"] = np.array([[row[-1]] for row in inputs], dtype=np.float32)
            inputs = [row[:-1] for row in inputs]
        values, mask = pad_left(inputs, self.patch_size)
        return {"series": values, "mask": mask, **season}

    def run_batch(self, inputs: list[np.ndarray]) -> list[Moments]:
        outputs = self.runtime.run(self.feeds(inputs))
        mean, std = outputs["mean"], outputs["std"]
        expected = (len(inputs), self.max_horizon)
        if mean.shape != expected or std.shape != expected:
            raise RuntimeError(f"mean and std have shapes {mean.shape} and {std.shape}, expected {expected}")
        return list(np.stack([mean, std], axis=1))

    def sample_input(self) -> np.ndarray:
        steps = np.arange(self.context_length, dtype=np.float32)
        return self.item(np.sin(steps / 8.0).astype(np.float32), None)

    async def forecast(
        self, queries: list[ForecastQuery], locate: Locate, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """One answer per query, in order, computed in batches with other requests' series."""
        moments = await self.queue.submit_many([self.item(q.window, q.season) for q in queries], timeout_s)
        answers = [self.answer(q, mean, std) for q, (mean, std) in zip(queries, moments, strict=True)]
        check([Problem("series", OVERFLOW, q.item) for q, a in zip(queries, answers, strict=True)
               if not _finite(a)], locate)  # fmt: skip
        return answers

    def answer(self, query: ForecastQuery, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
        mean, std = mean[: query.horizon], std[: query.horizon]
        intervals = {}
        for level in query.levels:
            lower, upper = interval(mean, std, level)
            intervals[level_key(level)] = {"lower": lower, "upper": upper}
        answer = {
            "forecast": mean,
            "intervals": intervals,
            "model": self.name,
            "version": self.version,
            "precision": self.precision,
        }
        if query.quantiles is not None:
            answer["quantiles"] = {quantile_key(q): quantile(mean, std, q) for q in query.quantiles}
        return answer

    async def infer(
        self, arrays: dict[str, np.ndarray], locate: Locate, timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        series = arrays["series"]
        given = arrays.get("horizon")
        horizon = self.max_horizon if given is None else int(given.flat[0])
        hints = arrays.get("season_length")
        seasons = [None] * len(series) if hints is None else np.broadcast_to(hints, (len(series), 1))[:, 0]
        items = [
            self.item(recent_window(row, self.context_length), None if season is None else int(season))
            for row, season in zip(series, seasons, strict=True)
        ]
        moments = np.stack(await self.queue.submit_many(items, timeout_s))
        mean, std = moments[:, 0, :horizon], moments[:, 1, :horizon]
        rows = np.flatnonzero(~(np.isfinite(mean).all(axis=1) & np.isfinite(std).all(axis=1)))
        check([Problem("series", OVERFLOW, int(row)) for row in rows], locate)
        outputs = {"mean": mean, "std": std}
        if "quantiles" in arrays:  # (n, k, horizon): each series' forecast at each quantile, in order
            levels = arrays["quantiles"].ravel().tolist()
            outputs["quantiles"] = np.stack([quantile(mean, std, q) for q in levels], axis=1)
        return outputs


def _finite(answer: dict[str, Any]) -> bool:
    bounds = [b for pair in answer["intervals"].values() for b in pair.values()]
    bounds += list(answer.get("quantiles", {}).values())
    return all(np.isfinite(a).all() for a in [answer["forecast"], *bounds])
