"""The models the service serves, loaded, verified and warmed up at start-up.

A model that cannot be loaded does not stop the service: it stays not ready (GET /health/ready
answers 503 and says why), its routes answer 503, and the reason is logged naming the file at fault.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from service.config import Settings
from service.digits import DigitClassifier
from service.errors import ModelNotReady, ServiceError, ShuttingDown
from service.forecasting import Forecaster
from service.metrics import ServiceMetrics
from service.repository import ModelArtifact, ModelLoadError, locate
from service.runtimes import load_runtime
from service.served import ServedModel

ModelKind = type[DigitClassifier] | type[Forecaster]

logger = logging.getLogger(__name__)


def model_kinds(settings: Settings) -> list[tuple[ModelKind, str]]:
    """What the service serves: each task's class and the configured model's name."""
    return [(DigitClassifier, settings.digit_model), (Forecaster, settings.forecast_model)]


class Registry(Protocol):
    """What the routes need: the models by task, their readiness and description.

    `ModelRegistry` runs the models in this process; `service.engine.client.RemoteRegistry` is the
    front for models that run in the model engine."""

    def digit_classifier(self) -> DigitClassifier: ...

    def forecaster(self) -> Forecaster: ...

    async def readiness(self) -> dict[str, str]: ...

    async def describe(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def locate_for(kind: ModelKind, name: str, settings: Settings) -> ModelArtifact:
    """The verified artifact of model `name`, which must be of `kind`'s task; blocking. Raises
    `ModelLoadError`."""
    artifact = locate(settings.model_dir, name, settings.backend)
    if artifact.task != kind.task:
        raise ModelLoadError(
            f"{artifact.directory / 'metadata.json'}: task is {artifact.task!r}, but this model is "
            f"configured to serve {kind.task!r}; check RNNSERVE_DIGIT_MODEL / RNNSERVE_FORECAST_MODEL"
        )
    return artifact


class ServedModels:
    """The models by name, or why each is missing; the routes' look-ups by task."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, ServedModel[Any, Any]] = {}
        self._problems: dict[str, str] = {}

    def model(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else a `ServiceError` (503) saying why."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotReady(f"model {name} is not loaded: {self._problems.get(name, 'unknown reason')}")
        return model

    def digit_classifier(self) -> DigitClassifier:
        model = self.model(self._settings.digit_model)
        assert isinstance(model, DigitClassifier)  # locate_for checked the task
        return model

    def forecaster(self) -> Forecaster:
        model = self.model(self._settings.forecast_model)
        assert isinstance(model, Forecaster)
        return model


def load_model(
    kind: ModelKind, name: str, settings: Settings, metrics: ServiceMetrics
) -> ServedModel[Any, Any]:
    """Locate, verify, open and warm up model `name`; blocking. Raises `ModelLoadError`."""
    artifact = locate_for(kind, name, settings)
    runtime = load_runtime(artifact, settings.backend, settings.device, settings.threads)
    model = kind.load(artifact, runtime, settings.batching_for(name), metrics.for_batcher(name))
    try:
        model.warm_up()
    except Exception as exc:
        raise ModelLoadError(f"{artifact.file}: the warm-up run failed: {exc}") from exc
    return model


class ModelRegistry(ServedModels):
    """The digit classifier and the forecaster, run in this process, or why each is missing."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        super().__init__(settings)
        self._metrics = metrics

    @classmethod
    async def open(cls, settings: Settings, metrics: ServiceMetrics) -> ModelRegistry:
        registry = cls(settings, metrics)
        unknown = set(settings.model_batching) - {settings.digit_model, settings.forecast_model}
        if unknown:
            logger.warning(
                "RNNSERVE_MODEL_BATCHING names %s, which this service does not serve", sorted(unknown)
            )
        for kind, name in model_kinds(settings):
            await registry._load(kind, name)
        return registry

    async def _load(self, kind: ModelKind, name: str) -> None:
        self._metrics.model_ready.labels(name).set(0)
        try:
            model = await asyncio.to_thread(load_model, kind, name, self._settings, self._metrics)
        except ModelLoadError as exc:
            self._problems[name] = str(exc)
            logger.error("model %s is not ready: %s", name, exc)
            return
        except Exception as exc:
            self._problems[name] = f"{type(exc).__name__}: {exc}"
            logger.exception("model %s is not ready: loading it failed unexpectedly", name)
            return
        model.batcher.start()
        self._models[name] = model
        runtime = model.runtime
        self._metrics.model_info.labels(
            name, model.version, runtime.backend, runtime.provider, runtime.device
        ).set(1)
        self._metrics.model_ready.labels(name).set(1)
        logger.info(
            "serving %s version %s with %s on %s (%s)", name, model.version, runtime.backend,
            runtime.device, runtime.provider,
        )  # fmt: skip

    def model(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else `ModelNotReady` or `ShuttingDown` saying why."""
        model = super().model(name)
        if not model.batcher.serving:
            raise ShuttingDown(f"model {name} takes no new inputs: the service is shutting down")
        if model.batcher.problem is not None:
            raise ModelNotReady(f"model {name} is not ready: {model.batcher.problem}")
        return model

    async def readiness(self) -> dict[str, str]:
        """Each model's state: "ready", or why it is not."""
        names = [self._settings.digit_model, self._settings.forecast_model]
        states = {}
        for name in names:
            try:
                self.model(name)
                states[name] = "ready"
            except ServiceError as exc:
                states[name] = exc.message
        return states

    async def describe(self) -> list[dict[str, Any]]:
        """What GET /models shows: every model, loaded or not."""
        described = [model.describe() for model in self._models.values()]
        described += [{"name": n, "ready": False, "problem": p} for n, p in self._problems.items()]
        return described

    async def close(self) -> None:
        """Stop every batcher; inputs still queued are answered 503."""
        for name, model in self._models.items():
            await model.batcher.close()
            self._metrics.model_ready.labels(name).set(0)
