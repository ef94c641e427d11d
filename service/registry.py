"""The models the service serves, loaded, verified and warmed up at start-up.

A model that cannot be loaded does not stop the service: it stays not ready (GET /health/ready
answers 503 and says why), its routes answer 503, and the reason is logged naming the file at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from service.config import Settings
from service.errors import InvalidInput, ModelNotReady, NotFound, ServiceError, ShuttingDown
from service.lifecycle.leases import hold
from service.loading import load_model, model_kinds
from service.metrics import ServiceMetrics
from service.repository import ModelLoadError
from service.tasks import Task
from service.tasks.base import InputQueue, ServedModel

Model = TypeVar("Model", bound=ServedModel[Any, Any])

logger = logging.getLogger(__name__)


class Registry(Protocol):
    """What the routes need: the models by name and by task, their readiness and description.

    `ModelRegistry` runs the models in this process; `service.engine.client.RemoteRegistry` is the
    front for models that run in the model engine."""

    def for_task(self, kind: type[Model], name: str | None) -> Model: ...

    def admit(self, kind: Task) -> None: ...

    def names(self) -> list[str]: ...

    def served_versions(self) -> dict[str, str]: ...

    def loaded(self, name: str) -> ServedModel[Any, Any]: ...

    def ready(self, name: str) -> ServedModel[Any, Any]: ...

    async def readiness(self) -> dict[str, str]: ...

    async def describe(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def unloaded_reason(name: str) -> str:
    return f"model {name} was unloaded; POST /v2/repository/models/{name}/load serves it again"


class ServedModels:
    """The models by name, or why each is missing; the routes' look-ups by task.

    Every model handed to a request in a `service.lifecycle.leases.RequestScope` is held by it, so
    that a model swapped out or unloaded meanwhile serves that request to its end."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kinds: dict[str, Task | None] = dict((name, kind) for kind, name in model_kinds(settings))
        self._tasks = {name: kind.task for name, kind in self._kinds.items() if kind is not None}
        self._choices: dict[str, list[str]] = {}  # by task, as `choices` found them
        self._models: dict[str, ServedModel[Any, Any]] = {}
        self._problems: dict[str, str] = {}
        self._unloaded: set[str] = set()

    @property
    def settings(self) -> Settings:
        return self._settings

    def problem(self, name: str) -> str | None:
        """Why model `name` is not served, if it is not."""
        return None if name in self._models else self._problems.get(name)

    def names(self) -> list[str]:
        """The models this service serves or was asked to serve, loaded or not."""
        return list(self._kinds)

    def kind(self, name: str) -> Task | None:
        return self._kinds.get(name)

    def _served(self, model: ServedModel[Any, Any]) -> ServedModel[Any, Any] | None:
        """Serve `model` under its name from now on; the model it replaces, if any."""
        self._kinds.setdefault(model.name, type(model))
        self._tasks[model.name] = model.task
        self._choices.clear()
        self._problems.pop(model.name, None)
        self._unloaded.discard(model.name)
        replaced = self._models.get(model.name)
        self._models[model.name] = model
        return replaced

    def _unserved(self, name: str) -> ServedModel[Any, Any] | None:
        """Take model `name` out of service (requests for it get 503 saying so); the model it was."""
        self._kinds.setdefault(name, None)
        self._unloaded.add(name)
        self._problems[name] = unloaded_reason(name)
        return self._models.pop(name, None)

    def _failed(self, name: str, problem: str) -> None:
        self._kinds.setdefault(name, None)
        self._problems[name] = problem

    def served_versions(self) -> dict[str, str]:
        """The version of each model served now."""
        return {name: model.version for name, model in self._models.items()}

    def _to_load(self, versions: dict[str, str | None] | None) -> list[tuple[str, str | None]]:
        """At start-up: each model to load and its version (None: as configured), from a plan's
        `versions` (None: unloaded), and every configured model the plan leaves out (it has no version to
        serve: it fails to load and says why)."""
        if versions is None:
            return [(name, None) for name in self.names()]
        for name, version in versions.items():
            if version is None:
                self._unserved(name)
        planned = [(name, version) for name, version in versions.items() if version is not None]
        return planned + [(name, None) for name in self.names() if name not in versions]

    def unloaded(self, name: str) -> bool:
        return name in self._unloaded

    def loaded(self, name: str) -> ServedModel[Any, Any]:
        """Model `name` as loaded, ready or not: `NotFound` (404) if the service does not serve it,
        `ModelNotReady` (503) if it could not be loaded or was unloaded."""
        model = self._models.get(name)
        if model is not None:
            hold(model.leases)
            return model
        if name not in self._kinds:
            raise NotFound(f"model {name!r} is not served here; the models are {', '.join(self.names())}")
        raise ModelNotReady(f"model {name} is not loaded: {self._problems.get(name, 'unknown reason')}")

    def ready(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else a `ServiceError` (404, 503) saying why."""
        return self.loaded(name)

    def choices(self, kind: Task) -> list[str]:
        """The models of `kind`'s task, the default first; kept, since every request reads them."""
        if kind.task not in self._choices:
            self._choices[kind.task] = [n for n in self.names() if self._tasks.get(n) == kind.task]
        return self._choices[kind.task]

    def default(self, kind: Task) -> str:
        """The model a request of `kind`'s task gets when it names none: the configured default, or
        while that is unloaded the next model of the task that is not."""
        choices = self.choices(kind)
        for name in choices:
            if name not in self._unloaded:
                return name
        return choices[0]

    def for_task(self, kind: type[Model], name: str | None) -> Model:
        """Model `name` (the task's default when None), ready to take inputs, which must be of `kind`'s
        task: else 422 listing the choices."""
        if name is None:
            return self._of(kind, self.ready(self.default(kind)))
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
        default = self.default(kind)
        refusal = self._refusal(default)
        if refusal is None:
            return  # the common case, on every request: nothing more is built
        refusals = [refusal]
        # The task's other models, in their order, only when the default refuses.
        for name in self.choices(kind):
            if name != default:
                refusal = self._refusal(name)
                if refusal is None:
                    return
                refusals.append(refusal)
        error, refusing = refusals[0]
        if refusing is not None:
            refusing.admit()  # counts the refusal, and raises it
        raise error

    def _refusal(self, name: str) -> tuple[ServiceError, InputQueue | None] | None:
        """Why model `name` would refuse one more input now, with its queue when it has one; None if it
        would take it."""
        try:
            queue = self._models[name].queue if name in self._models else self.ready(name).queue
        except ServiceError as exc:
            return exc, None
        error = queue.refusal()
        return None if error is None else (error, queue)

    async def readiness(self) -> dict[str, str]:
        """Each model's state: "ready", or why it is not; a model unloaded on purpose is left out."""
        states = {}
        for name in self.names():
            if name in self._unloaded:
                continue
            try:
                self.ready(name)
                states[name] = "ready"
            except ServiceError as exc:
                states[name] = exc.message
        return states


class ModelRegistry(ServedModels):
    """The models, run in this process, or why each is missing; versions loaded beside the served
    ones and swapped in, and the ones swapped out let go once no request holds them."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        super().__init__(settings)
        self._metrics = metrics
        self.transitions: dict[tuple[str, str], tuple[str, str]] = {}
        """(model, version) -> (state, reason) of a version that is not the one served: LOADING,
        UNLOADING, or UNAVAILABLE once it failed to load."""
        self._retiring: dict[tuple[str, str], ServedModel[Any, Any]] = {}
        self.on_served: Callable[[ServedModel[Any, Any]], None] | None = None
        """Called with each model once it serves (the model engine shares its queue state)."""

    @classmethod
    async def open(
        cls, settings: Settings, metrics: ServiceMetrics, versions: dict[str, str | None] | None = None
    ) -> ModelRegistry:
        """The models, each loaded at the version `versions` names (None: unloaded), else as configured."""
        registry = cls(settings, metrics)
        unknown = set(settings.model_batching) - set(registry.names())
        if unknown:
            logger.warning(
                "RNNSERVE_MODEL_BATCHING names %s, which this service does not serve", sorted(unknown)
            )
        for name, version in registry._to_load(versions):
            with contextlib.suppress(ModelLoadError):  # logged, and why is kept for the routes
                registry._install(await registry.load_version(name, version))
        return registry

    async def load_version(self, name: str, version: str | None) -> ServedModel[Any, Any]:
        """Version `version` of model `name` (None: as configured), loaded, verified, warmed up and its
        batcher started, but not yet served. Raises `ModelLoadError` saying why, kept for the index."""
        key = (name, version or "")
        self.transitions[key] = ("LOADING", "")
        try:
            model = await asyncio.to_thread(
                load_model, self.kind(name), name, self._settings, self._metrics, version
            )
        except Exception as exc:
            problem = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            self.transitions[key] = ("UNAVAILABLE", problem)
            if name not in self._models:
                self._failed(name, problem)
                self._metrics.model_ready.labels(name).set(0)
            self._metrics.model_loads.labels(name, "failed").inc()
            logger.error("model %s version %s could not be loaded: %s", name, version or "(newest)", problem,
                         exc_info=not isinstance(exc, ModelLoadError))  # fmt: skip
            raise ModelLoadError(problem) from exc
        finally:
            if self.transitions.get(key, ("",))[0] == "LOADING":
                del self.transitions[key]
        self.transitions.pop((name, model.version), None)
        model.batcher.start()
        self._metrics.model_loads.labels(name, "loaded").inc()
        return model

    def _install(self, model: ServedModel[Any, Any]) -> ServedModel[Any, Any] | None:
        """Serve `model` from now on; the model it replaces, still running its requests."""
        replaced = self._served(model)
        runtime = model.runtime
        if replaced is not None:
            replaced.batcher.on_change = None
            self._info(replaced).set(0)
        if self.on_served is not None:
            self.on_served(model)
        self._info(model).set(1)
        self._metrics.model_ready.labels(model.name).set(1)
        logger.info(
            "serving %s version %s in %s with %s on %s (%s): %s", model.name, model.version, model.precision,
            runtime.backend, runtime.device, runtime.provider, model.artifact.precision_reason,
        )  # fmt: skip
        return replaced

    def _info(self, model: ServedModel[Any, Any]) -> Any:
        runtime = model.runtime
        return self._metrics.model_info.labels(
            model.name, model.version, model.precision, runtime.backend, runtime.provider, runtime.device
        )

    def swap(self, model: ServedModel[Any, Any]) -> ServedModel[Any, Any] | None:
        """Serve `model` in place of its name's current version, which is kept (for `serving` to find)
        until `retire`."""
        replaced = self._install(model)
        if replaced is not None:
            self._retiring[(replaced.name, replaced.version)] = replaced
        return replaced

    def unload(self, name: str) -> ServedModel[Any, Any] | None:
        """Stop serving model `name`; the model it was, kept until `retire`."""
        model = self._unserved(name)
        if model is not None:
            self._info(model).set(0)
            self._metrics.model_ready.labels(name).set(0)
            self._retiring[(model.name, model.version)] = model
            logger.info("model %s version %s is unloaded", model.name, model.version)
        return model

    async def retire(self, model: ServedModel[Any, Any]) -> None:
        """Let go of a model swapped out or unloaded: once no request holds it, stop its batcher."""
        key = (model.name, model.version)
        self.transitions[key] = ("UNLOADING", "")
        try:
            await model.leases.idle()
            model.batcher.on_change = None
            await model.batcher.close()
            model.release()
        finally:
            self._retiring.pop(key, None)
            if self.transitions.get(key, ("",))[0] == "UNLOADING":
                del self.transitions[key]
        logger.info("let go of model %s version %s", model.name, model.version)

    def serving(self, name: str, version: str | None) -> ServedModel[Any, Any]:
        """Model `name` at `version` (any when None), served or swapped out but not yet let go, ready to
        take inputs: what the model engine runs a worker's request on."""
        model = self._models.get(name)
        if version is None or (model is not None and model.version == version):
            return self.ready(name)
        retiring = self._retiring.get((name, version))
        if retiring is None:
            raise ModelNotReady(f"model {name} version {version} is no longer served: retry the request")
        hold(retiring.leases)
        return retiring

    def ready(self, name: str) -> ServedModel[Any, Any]:
        """Model `name`, if it takes inputs; else `ModelNotReady` or `ShuttingDown` saying why."""
        model = super().ready(name)
        if not model.batcher.serving:
            raise ShuttingDown(f"model {name} takes no new inputs: the service is shutting down")
        if model.batcher.problem is not None:
            raise ModelNotReady(f"model {name} is not ready: {model.batcher.problem}")
        return model

    async def describe(self) -> list[dict[str, Any]]:
        """What GET /models shows: every model, loaded or not."""
        described = [model.describe() for model in self._models.values()]
        described += [{"name": n, "ready": False, "problem": p} for n, p in self._problems.items()]
        return described

    async def close(self) -> None:
        """Stop every batcher; inputs still queued are answered 503."""
        for model in [*self._models.values(), *self._retiring.values()]:
            await model.batcher.close()
            model.release()
            self._metrics.model_ready.labels(model.name).set(0)
