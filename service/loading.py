"""From a model's name to a model ready to serve: which models the service serves, the version of
each (its artifact verified, its precision chosen) and the model opened and warmed up."""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.metrics import ServiceMetrics
from service.precision import select
from service.repository import ModelArtifact, ModelLoadError, locate, model_names
from service.runtimes import load_runtime, on_gpu
from service.tasks import TASKS, Task
from service.tasks.base import ServedModel
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster


def model_kinds(settings: Settings) -> list[tuple[Task | None, str]]:
    """What the service serves: the two default models with the class of their task, then the other
    models (RNNSERVE_MODELS), whose task their metadata names (None until it is read)."""
    defaults: list[tuple[Task | None, str]] = [
        (DigitClassifier, settings.digit_model),
        (Forecaster, settings.forecast_model),
    ]
    return defaults + [(None, name) for name in settings.extra_models(model_names(settings.model_dir))]


def locate_for(
    kind: Task | None, name: str, settings: Settings, version: str | None = None
) -> tuple[Task, ModelArtifact]:
    """The class of model `name`'s task and its verified artifact, at `version` (else the one
    RNNSERVE_MODEL_VERSIONS pins, else the newest); with `kind`, the task must be that class's.
    Blocking; raises `ModelLoadError`."""
    version = version or settings.model_versions.get(name)
    artifact = locate(settings.model_dir, name, settings.backend, version)
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
    chosen = select(
        artifact, settings.precision, settings.backend, settings.model_threads(), lambda: on_gpu(settings)
    )
    return actual, chosen


def load_model(
    kind: Task | None, name: str, settings: Settings, metrics: ServiceMetrics, version: str | None = None
) -> ServedModel[Any, Any]:
    """Locate, verify, open and warm up model `name` (at `version`); blocking. Raises `ModelLoadError`."""
    kind, artifact = locate_for(kind, name, settings, version)
    runtime = load_runtime(artifact, settings.backend, settings.device, settings.threads)
    model = kind.load(artifact, runtime, settings.batching_for(name), metrics.for_batcher(name))
    try:
        model.warm_up()
    except Exception as exc:
        raise ModelLoadError(f"{artifact.file}: the warm-up run failed: {exc}") from exc
    return model
