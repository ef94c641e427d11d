"""The service's answers as dataclasses, with its own field names, and the one input type of the calls.

Each `from_json` reads exactly what the service sends and ignores fields added by a newer service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LEVELS: tuple[float, ...] = (80, 95)


@dataclass(frozen=True)
class ForecastInput:
    """One series to forecast with `Client.forecast_many`: values oldest first (a sequence of numbers or
    a 1-D numpy array; None or NaN for a missing value), how many steps to forecast, the interval
    levels in percent, the quantiles to forecast (probabilities), if any, and its season length in
    steps (1: no seasonality), for a model that takes one; None lets the model find the period."""

    series: Sequence[float | None] | Any
    horizon: int
    levels: Sequence[float] = DEFAULT_LEVELS
    quantiles: Sequence[float] | None = None
    season_length: int | None = None


@dataclass(frozen=True)
class DigitPrediction:
    """The answer for one image: the most probable digit, its probability, and all ten; the model, its
    version and the precision of its graph that answered ("int8" or "fp32"; empty from an older server)."""

    digit: int
    confidence: float
    probabilities: list[float]
    model: str
    version: str
    precision: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DigitPrediction:
        return cls(
            digit=int(data["digit"]),
            confidence=float(data["confidence"]),
            probabilities=[float(p) for p in data["probabilities"]],
            model=str(data["model"]),
            version=str(data["version"]),
            precision=str(data.get("precision", "")),
        )


@dataclass(frozen=True)
class Interval:
    """A central prediction interval: one lower and one upper bound per forecast step."""

    lower: list[float]
    upper: list[float]


@dataclass(frozen=True)
class Forecast:
    """The answer for one series: the expected next values, and the intervals by level ("80", "95")."""

    forecast: list[float]
    intervals: dict[str, Interval]
    model: str
    version: str
    quantiles: dict[str, list[float]] = field(default_factory=dict)
    """Per quantile asked for ("0.1", "0.9"), the forecast's values at it."""
    precision: str = ""
    """The precision of the graph that answered ("fp32"; empty from an older server)."""

    def interval(self, level: float) -> Interval:
        """The interval of `level` percent, e.g. `interval(95)` (or `interval(97.5)`)."""
        key = str(int(level)) if float(level).is_integer() else repr(float(level))
        try:
            return self.intervals[key]
        except KeyError:
            raise KeyError(
                f"no {key} % interval in this forecast; it has {', '.join(self.intervals)}: "
                "ask for the level in `levels`"
            ) from None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Forecast:
        return cls(
            forecast=[float(v) for v in data["forecast"]],
            intervals={
                str(level): Interval(
                    lower=[float(v) for v in bounds["lower"]], upper=[float(v) for v in bounds["upper"]]
                )
                for level, bounds in data["intervals"].items()
            },
            model=str(data["model"]),
            version=str(data["version"]),
            quantiles={str(q): [float(v) for v in values] for q, values in data.get("quantiles", {}).items()},
            precision=str(data.get("precision", "")),
        )


@dataclass(frozen=True)
class Health:
    """`GET /health/live` and `GET /health/ready`: the process answers, and whether every model is
    loaded, verified and warmed up. `models` maps each model to "ready" or the reason it is not."""

    live: bool
    ready: bool
    status: str
    models: dict[str, str]

    @classmethod
    def from_json(cls, live: dict[str, Any], ready: dict[str, Any], ready_status_code: int) -> Health:
        return cls(
            live=live.get("status") == "live",
            ready=ready_status_code == 200,
            status=str(ready.get("status", "")),
            models={str(name): str(state) for name, state in (ready.get("models") or {}).items()},
        )


@dataclass(frozen=True)
class Batching:
    """How a model batches: its limits, and how many inputs wait in its queue right now."""

    max_batch_size: int
    max_delay_ms: float
    max_queue_size: int
    queue_timeout_s: float
    queue_depth: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batching:
        return cls(
            max_batch_size=int(data["max_batch_size"]),
            max_delay_ms=float(data["max_delay_ms"]),
            max_queue_size=int(data["max_queue_size"]),
            queue_timeout_s=float(data["queue_timeout_s"]),
            queue_depth=int(data["queue_depth"]),
        )


@dataclass(frozen=True)
class ModelInfo:
    """One model of `GET /models`. A model that failed to load has only `name`, `ready` (False) and
    `problem`; a loaded one has the rest, `metadata` being its `metadata.json` (config, metrics,
    checksums)."""

    name: str
    ready: bool
    problem: str | None = None
    version: str | None = None
    task: str | None = None
    precision: str | None = None
    """"int8" or "fp32": the precision of the graph that answers."""
    precision_reason: str | None = None
    backend: str | None = None
    execution_provider: str | None = None
    device: str | None = None
    threads: int | None = None
    """CPU threads one model call may use (RNNSERVE_THREADS; 0 there shares the cores among workers)."""
    batching: Batching | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        batching = data.get("batching")
        return cls(
            name=str(data["name"]),
            ready=bool(data.get("ready", False)),
            problem=text("problem"),
            version=text("version"),
            task=text("task"),
            precision=text("precision"),
            precision_reason=text("precision_reason"),
            backend=text("backend"),
            execution_provider=text("execution_provider"),
            device=text("device"),
            threads=None if data.get("threads") is None else int(data["threads"]),
            batching=Batching.from_json(batching) if isinstance(batching, dict) else None,
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class ModelListing:
    """`GET /models`: the backend in use, the device asked for, and every model, loaded or not."""

    backend: str
    requested_device: str
    models: list[ModelInfo]

    def model(self, name: str) -> ModelInfo:
        """The model called `name`."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model {name!r} is served; these are: {', '.join(m.name for m in self.models)}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelListing:
        return cls(
            backend=str(data["backend"]),
            requested_device=str(data["requested_device"]),
            models=[ModelInfo.from_json(model) for model in data["models"]],
        )


@dataclass(frozen=True)
class RepositoryEntry:
    """One version of one model in the repository index: READY (served), LOADING, UNLOADING or
    UNAVAILABLE, with `reason` when it is not READY."""

    name: str
    version: str
    state: str
    reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepositoryEntry:
        reason = data.get("reason")
        return cls(
            str(data["name"]),
            str(data["version"]),
            str(data["state"]),
            None if reason is None else str(reason),
        )


@dataclass(frozen=True)
class ModelChange:
    """What a load or unload did: the model's `version` served now ("" once unloaded), its `state`,
    whether anything `changed`, and how long the change took in `seconds` (None if nothing changed)."""

    name: str
    version: str
    state: str
    changed: bool
    seconds: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelChange:
        seconds = data.get("seconds")
        return cls(
            str(data["name"]), str(data.get("version", "")), str(data["state"]), bool(data["changed"]),
            None if seconds is None else float(seconds),
        )  # fmt: skip
