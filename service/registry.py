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
from service.errors import InvalidInput, ModelNotReady, NotFound, ServiceError, ShuttingDown
from service.forecasting import Forecaster
from service.metrics import ServiceMetrics
from service.repository import ModelArtifact, ModelLoadError, locate, model_names
from service.runtimes import load_runtime
from service.served import ServedModel

ModelKind = type[DigitClassifier] | type[Forecaster]

logger = logging.getLogger(__name__)


KINDS: dict[str, ModelKind] = {DigitClassifier.task: DigitClassifier, Forecaster.task: Forecaster}


def model_kinds(settings: Settings) -> list[tuple[ModelKind | None, str]]:
    """What the service serves: the two default models with the class of their task, then the other
    models (RNNSERVE_MODELS), whose task their metadata names (None until it is read)."""
    defaults: list[tuple[ModelKind | None, str]] = [
        (DigitClassifier, settings.digit_model),
        (Forecaster, settings.forecast_model),
    ]
    return defaults + [(None, name) for name in settings.extra_models(model_names(settings.model_dir))]


class Registry(Protocol):
    """What the routes need: the models by name and by task, their readiness and description.

    `ModelRegistry` runs the models in this process; `service.engine.client.RemoteRegistry` is the
    front for models that run in the model engine."""

    def digit_classifier(self, name: str | None = None) -> DigitClassifier: ...

    def forecaster(self, name: str | None = None) -> Forecaster: ...

    def admit(self, kind: ModelKind) -> None: ...

    def names(self) -> list[str]: ...

    def lookup(self, name: str) -> ServedModel[Any, Any]: ...

    def model(self, name: str) -> ServedModel[Any, Any]: ...

    async def readiness(self) -> dict[str, str]: ...

    async def describe(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def locate_for(kind: ModelKind | None, name: str, settings: Settings) -> tuple[ModelKind, ModelArtifact]:
    """The class of model `name`'s task and its verified artifact; with `kind`, the task must be that
    class's. Blocking; raises `ModelLoadError`."""
    artifact = locate(settings.model_dir, name, settings.backend, settings.model_versions.get(name))
    actual = KINDS.get(artifact.task)
    if actual is None:
        raise ModelLoadError(
            f"{artifact.directory / 'metadata.json'}: task is {artifact.task!r}, which this service does not "
            f"serve; the tasks are {', '.join(KINDS)}"
        )
    if kind is not None and actual is not kind:
        raise ModelLoadError(
            f"{artifact.directory / 'metadata.json'}: task is {artifact.task!r}, but this model is "
            f"configured to serve {kind.task!r}; check RNNSERVE_DIGIT_MODEL / RNNSERVE_FORECAST_MODEL"
        )
    return actual, artifact


class ServedModels:
    """The models by name, or why each is missing; the routes' look-ups by task."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kinds = model_kinds(settings)
        self._tasks = {name: kind.task for kind, name in self._kinds if kind is not None}
        self._models: dict[str, ServedModel[Any, Any]] = {}
        self._problems: dict[str, str] = {}

    def names(self) -> list[str]:
        """The models this service is configured to serve, loaded or not."""
        return [name for _, name in self._kinds]

    def _served(self, model: ServedModel[Any, Any]) -> None:
        self._models[model.name] = model
        self._tasks[model.name] = model.task

    def lookup(self, name: str) -> ServedModel[Any, Any]:
        """Model `name` as loaded, ready or not: `NotFound` (404) if the service does not serve it,
        `ModelNotReady` (503) if it could not be loaded."""
        model = self._models.get(name)
        if model is not None:
            return model
        if name not in self.names():
            raise NotFound(f"model {name!r} is not served here; the models are {', '.join(self.names())}")
        raise ModelNotReady(f"model {name} is not loaded: {self._problems.get(name, 'unknown reason')}")

    def model(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else a `ServiceError` (404, 503) saying why."""
        return self.lookup(name)

    def choices(self, kind: ModelKind) -> list[str]:
        """The models of `kind`'s task, the default first."""
        return [name for name in self.names() if self._tasks.get(name) == kind.task]

    def for_task(self, kind: ModelKind, name: str | None) -> ServedModel[Any, Any]:
        """Model `name` (the task's default when None), which must be of `kind`'s task: else 422
        listing the choices."""
        if name is None:
            return self.model(self.choices(kind)[0])
        if self._tasks.get(name) != kind.task:
            raise InvalidInput.listing([{
                "loc": "model",
                "msg": f"{name!r} is not a {kind.task} model served here; choose one of "
                f"{', '.join(self.choices(kind))} (GET /models lists them)",
            }])  # fmt: skip
        return self.model(name)

    def admit(self, kind: ModelKind) -> None:
        """Before a request's body is read: refuse it (as its task's default model would) only if no
        model of the task could take it now. Once the body names its model, that model's queue decides."""
        refusals = []
        for name in self.choices(kind):
            try:
                self.model(name).queue.admit()
                return
            except ServiceError as exc:
                refusals.append(exc)
        raise refusals[0]

    def digit_classifier(self, name: str | None = None) -> DigitClassifier:
        model = self.for_task(DigitClassifier, name)
        assert isinstance(model, DigitClassifier)  # locate_for checked the task
        return model

    def forecaster(self, name: str | None = None) -> Forecaster:
        model = self.for_task(Forecaster, name)
        assert isinstance(model, Forecaster)
        return model


def load_model(
    kind: ModelKind | None, name: str, settings: Settings, metrics: ServiceMetrics
) -> ServedModel[Any, Any]:
    """Locate, verify, open and warm up model `name`; blocking. Raises `ModelLoadError`."""
    kind, artifact = locate_for(kind, name, settings)
    runtime = load_runtime(artifact, settings.backend, settings.device, settings.threads)
    model = kind.load(artifact, runtime, settings.batching_for(name), metrics.for_batcher(name))
    try:
        model.warm_up()
    except Exception as exc:
        raise ModelLoadError(f"{artifact.file}: the warm-up run failed: {exc}") from exc
    return model


class ModelRegistry(ServedModels):
    """The models, run in this process, or why each is missing."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        super().__init__(settings)
        self._metrics = metrics

    @classmethod
    async def open(cls, settings: Settings, metrics: ServiceMetrics) -> ModelRegistry:
        registry = cls(settings, metrics)
        unknown = set(settings.model_batching) - set(registry.names())
        if unknown:
            logger.warning(
                "RNNSERVE_MODEL_BATCHING names %s, which this service does not serve", sorted(unknown)
            )
        for kind, name in registry._kinds:
            await registry._load(kind, name)
        return registry

    async def _load(self, kind: ModelKind | None, name: str) -> None:
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
        self._served(model)
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
        states = {}
        for name in self.names():
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
