"""The models the service serves, loaded, verified and warmed up at start-up.

A model that cannot be loaded does not stop the service: it stays not ready (GET /health/ready
answers 503 and says why), its routes answer 503, and the reason is logged naming the file at fault.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, TypeVar

from service.config import Settings
from service.errors import InvalidInput, ModelNotReady, NotFound, ServiceError, ShuttingDown
from service.metrics import ServiceMetrics
from service.repository import ModelArtifact, ModelLoadError, locate, model_names
from service.runtimes import load_runtime
from service.tasks import TASKS, Task
from service.tasks.base import InputQueue, ServedModel
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster

Model = TypeVar("Model", bound=ServedModel[Any, Any])

logger = logging.getLogger(__name__)


def model_kinds(settings: Settings) -> list[tuple[Task | None, str]]:
    """What the service serves: the two default models with the class of their task, then the other
    models (RNNSERVE_MODELS), whose task their metadata names (None until it is read)."""
    defaults: list[tuple[Task | None, str]] = [
        (DigitClassifier, settings.digit_model),
        (Forecaster, settings.forecast_model),
    ]
    return defaults + [(None, name) for name in settings.extra_models(model_names(settings.model_dir))]


class Registry(Protocol):
    """What the routes need: the models by name and by task, their readiness and description.

    `ModelRegistry` runs the models in this process; `service.engine.client.RemoteRegistry` is the
    front for models that run in the model engine."""

    def for_task(self, kind: type[Model], name: str | None) -> Model: ...

    def admit(self, kind: Task) -> None: ...

    def names(self) -> list[str]: ...

    def loaded(self, name: str) -> ServedModel[Any, Any]: ...

    def ready(self, name: str) -> ServedModel[Any, Any]: ...

    async def readiness(self) -> dict[str, str]: ...

    async def describe(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def locate_for(kind: Task | None, name: str, settings: Settings) -> tuple[Task, ModelArtifact]:
    """The class of model `name`'s task and its verified artifact; with `kind`, the task must be that
    class's. Blocking; raises `ModelLoadError`."""
    artifact = locate(settings.model_dir, name, settings.backend, settings.model_versions.get(name))
    actual = TASKS.get(artifact.task)
    if actual is None:
        raise ModelLoadError(
            f"{artifact.directory / 'metadata.json'}: task is {artifact.task!r}, which this service does not "
            f"serve; the tasks are {', '.join(TASKS)}"
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

    def loaded(self, name: str) -> ServedModel[Any, Any]:
        """Model `name` as loaded, ready or not: `NotFound` (404) if the service does not serve it,
        `ModelNotReady` (503) if it could not be loaded."""
        model = self._models.get(name)
        if model is not None:
            return model
        if name not in self.names():
            raise NotFound(f"model {name!r} is not served here; the models are {', '.join(self.names())}")
        raise ModelNotReady(f"model {name} is not loaded: {self._problems.get(name, 'unknown reason')}")

    def ready(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else a `ServiceError` (404, 503) saying why."""
        return self.loaded(name)

    def choices(self, kind: Task) -> list[str]:
        """The models of `kind`'s task, the default first."""
        return [name for name in self.names() if self._tasks.get(name) == kind.task]

    def for_task(self, kind: type[Model], name: str | None) -> Model:
        """Model `name` (the task's default when None), ready to take inputs, which must be of `kind`'s
        task: else 422 listing the choices."""
        if name is None:
            return self._of(kind, self.ready(self.choices(kind)[0]))
        if self._tasks.get(name) != kind.task:
            raise InvalidInput.listing([{
                "loc": "model",
                "msg": f"{name!r} is not a {kind.task} model served here; choose one of "
                f"{', '.join(self.choices(kind))} (GET /models lists them)",
            }])  # fmt: skip
        return self._of(kind, self.ready(name))

    @staticmethod
    def _of(kind: type[Model], model: ServedModel[Any, Any]) -> Model:
        assert isinstance(model, kind)  # locate_for checked the task
        return model

    def admit(self, kind: Task) -> None:
        """Before a request's body is read: refuse it (as its task's default model would, counted once)
        only if no model of the task could take it now. Once the body names its model, that model's
        queue decides."""
        refusals: list[tuple[ServiceError, InputQueue | None]] = []
        for name in self.choices(kind):
            try:
                queue = self.ready(name).queue
            except ServiceError as exc:
                refusals.append((exc, None))
                continue
            error = queue.refusal()
            if error is None:
                return
            refusals.append((error, queue))
        error, refusing = refusals[0]
        if refusing is not None:
            refusing.admit()  # counts the refusal, and raises it
        raise error


def load_model(
    kind: Task | None, name: str, settings: Settings, metrics: ServiceMetrics
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

    async def _load(self, kind: Task | None, name: str) -> None:
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

    def ready(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else `ModelNotReady` or `ShuttingDown` saying why."""
        model = super().ready(name)
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
                self.ready(name)
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
