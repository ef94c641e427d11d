"""The models of one serving process, and the repository calls that change them, for its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from service.config import Settings
from service.engine.client import EngineRepository, RemoteRegistry
from service.lifecycle.control import ControlFolder
from service.lifecycle.manager import (
    Follower,
    FrontFollower,
    ModelsLifecycle,
    Repository,
    initial_plan,
    plan_versions,
)
from service.loading import model_kinds
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry, Registry

logger = logging.getLogger(__name__)


def control_folder(settings: Settings, scratch: contextlib.ExitStack) -> ControlFolder:
    """The service's control folder: the server's, or a temporary one for a process of its own."""
    if settings.control_dir is not None:
        return ControlFolder(settings.control_dir)
    path = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="rnnserve-control-")))
    return ControlFolder.create(path, initial_plan(settings, [name for _, name in model_kinds(settings)]))


@contextlib.asynccontextmanager
async def serving_models(
    settings: Settings, metrics: ServiceMetrics
) -> AsyncIterator[tuple[Registry, Repository]]:
    """The models (run here, or fronts for the model engine's), following the service's plan; SIGHUP
    looks for new versions once, and RNNSERVE_MODEL_POLL_S keeps looking."""
    with contextlib.ExitStack() as scratch:
        folder = control_folder(settings, scratch)
        folder.join("front" if settings.engine_address else "models")
        scratch.callback(folder.forget, os.getpid())
        plan = folder.read()
        registry: Registry
        follower: Follower
        repository: Repository
        if settings.engine_address:  # an HTTP worker: the models run in the model engine
            fronts = await RemoteRegistry.open(settings, metrics, plan_versions(plan))
            registry, follower = fronts, FrontFollower(fronts, folder, plan.generation)
            repository = EngineRepository(fronts.client)
            await follower.start()
            on_sighup = None  # the model engine looks, once the server passes SIGHUP on to it
        else:
            models = await ModelRegistry.open(settings, metrics, plan_versions(plan))
            lifecycle = ModelsLifecycle(
                settings, models, folder, plan.generation, metrics, waits_for="models"
            )
            registry, follower, repository = models, lifecycle, lifecycle
            await lifecycle.start()
            lifecycle.start_polling()

            def on_sighup() -> None:
                logger.info("SIGHUP: looking for new model versions")
                lifecycle.background(lifecycle.scan())

        with handling_sighup(on_sighup):
            try:
                yield registry, repository
            finally:
                await follower.stop()
                await registry.close()


@contextlib.contextmanager
def handling_sighup(action: Callable[[], None] | None) -> Iterator[None]:
    """Run `action` on SIGHUP (None: ignore it, rather than die of it) while inside, where the process
    handles signals (its main thread); elsewhere, e.g. an app under a test client's thread, nothing."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, action or (lambda: None))
    except (RuntimeError, ValueError, NotImplementedError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
