"""Model versions going live, and models unloaded, while the service runs, in every process at once.

A change (a load or unload call, the poll of the repository, SIGHUP) is made by one process, the
*coordinator*: a worker with its models inline, or the model engine. Holding the control folder's
lock, it loads the new version beside the served one (verified and warmed up; if that fails, nothing
changes and the call gets the reason), serves it, and writes the new plan. Every other process
follows the plan (`Follower`): a worker with its models inline loads the version and swaps it in too;
a front for the model engine's models swaps its front. Each acknowledges, and the coordinator answers
once all have, or says which have not. A version swapped out stays loaded until no request holds it
(`service.lifecycle.leases`): the requests that chose it finish on it, and none fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from service.config import Settings
from service.errors import ChangeIncomplete, InvalidInput, NotFound
from service.lifecycle.control import Ack, ControlFolder, Entry, Plan, Role
from service.lifecycle.index import repository_index
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.repository import ModelLoadError, locate, model_names, version_folders
from service.tasks.base import ServedModel

logger = logging.getLogger(__name__)

PLAN_WATCH_S = 0.05
"""How often a process looks whether the plan changed (one stat of its file)."""
ACK_TIMEOUT_S = 120.0
"""How long a coordinator waits for the other processes to apply a change."""

Swap = Callable[[str, str | None], Awaitable[tuple[ServedModel[Any, Any] | None, str | None]]]


class Repository(Protocol):
    """The repository calls, wherever the models run."""

    async def index(self, ready_only: bool = False) -> list[dict[str, str]]: ...

    async def load(self, name: str, version: str | None) -> dict[str, Any]: ...

    async def unload(self, name: str) -> dict[str, Any]: ...

    async def scan(self) -> list[str]: ...


def initial_plan(settings: Settings, names: list[str]) -> Plan:
    """What the service serves at start-up: each model at its pinned version, else the newest on disk.
    A model with no version to find is left out: it fails to load as configured, and says why."""
    models = {}
    for name in names:
        pinned = settings.model_versions.get(name)
        if pinned is not None:
            models[name] = Entry(pinned, pinned=True)
            continue
        with contextlib.suppress(ModelLoadError):
            models[name] = Entry(version_folders(settings.model_dir, name)[-1].name)
    return Plan(1, models)


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(name: str) -> None:
    """A model's name is a folder of the repository: never a path that leads out of it."""
    if not MODEL_NAME.fullmatch(name):
        raise NotFound(
            f"{name!r} cannot name a model: a model's name starts with a letter or digit, followed by "
            "letters, digits, '_', '-' or '.'"
        )


def outcome(name: str, version: str | None, changed: bool) -> dict[str, Any]:
    """What a load answers: the version of `name` served now ("" and UNAVAILABLE when none) and whether
    the call changed it."""
    return {"name": name, "version": version or "", "state": "READY" if version else "UNAVAILABLE",
            "changed": changed}  # fmt: skip


def plan_versions(plan: Plan) -> dict[str, str | None]:
    return {name: entry.version for name, entry in plan.models.items()}


class Follower:
    """A process that applies each new plan to its models (or fronts) and acknowledges it."""

    role: Role

    def __init__(self, registry: Any, folder: ControlFolder, applied: int) -> None:
        self.registry = registry
        self.folder = folder
        self.applied = applied
        self.applying = asyncio.Lock()
        self._tasks: set[asyncio.Future[object]] = set()

    async def start(self) -> None:
        """Serve the plan as it is now, which may have moved on while this process loaded its models,
        then acknowledge it and follow each change."""
        plan = self.folder.read()
        if plan.generation > self.applied:
            await self.apply(plan)
        else:
            self.acknowledge({})
        self.background(self._follow())

    def background(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.folder.forget(os.getpid())

    def acknowledge(self, problems: dict[str, str]) -> None:
        self.folder.acknowledge(Ack(os.getpid(), self.role, self.applied, problems))

    async def _follow(self) -> None:
        stamp = None
        while True:
            await asyncio.sleep(PLAN_WATCH_S)
            try:
                now = self.folder.stamp()
            except FileNotFoundError:
                continue
            if now == stamp:
                continue
            stamp = now
            plan = self.folder.read()
            if plan.generation > self.applied:
                try:
                    await self.apply(plan)
                except Exception:
                    logger.exception("applying generation %d of the model plan failed", plan.generation)

    async def apply(self, plan: Plan) -> None:
        """Serve what `plan` says; acknowledge it with what could not be done."""
        async with self.applying:
            if plan.generation <= self.applied:
                return
            problems, replaced = {}, []
            served = self.registry.served_versions()
            for name, entry in plan.models.items():
                if entry.version is None:
                    if not self.registry.unloaded(name):
                        replaced.append(self.registry.unload(name))
                elif served.get(name) != entry.version:
                    try:
                        replaced.append(self.registry.swap(await self.new(name, entry.version)))
                    except ModelLoadError as exc:
                        problems[name] = str(exc)
            self.applied = plan.generation
            await self.let_go([model for model in replaced if model is not None])
            self.acknowledge(problems)

    async def new(self, name: str, version: str) -> ServedModel[Any, Any]:
        raise NotImplementedError

    async def let_go(self, models: list[ServedModel[Any, Any]]) -> None:
        """What becomes of the models a plan replaced."""
        raise NotImplementedError


class FrontFollower(Follower):
    """An HTTP worker's fronts for the model engine's models. The engine is the coordinator; the
    worker acknowledges a plan once no request holds a replaced front, so that the engine can let
    the replaced version go."""

    role: Role = "front"

    async def new(self, name: str, version: str) -> ServedModel[Any, Any]:
        front: ServedModel[Any, Any] = await self.registry.front(name, version)
        return front

    async def let_go(self, models: list[ServedModel[Any, Any]]) -> None:
        await asyncio.gather(*(model.leases.idle() for model in models))


class ModelsLifecycle(Follower):
    """A process that runs the models: it follows the plan (a worker with its models inline, beside
    other workers) and coordinates the changes asked of it: load and unload calls, the poll, SIGHUP."""

    role: Role = "models"

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        folder: ControlFolder,
        applied: int,
        metrics: ServiceMetrics,
        waits_for: Role,
    ) -> None:
        super().__init__(registry, folder, applied)
        self.registry: ModelRegistry = registry
        self.settings = settings
        self.metrics = metrics
        self.waits_for = waits_for
        """Whose acknowledgements a change waits for: the other workers' ("models"), or, in the model
        engine, the fronts'."""
        self._scanned: dict[tuple[str, str], tuple[tuple[str, int, int], ...]] = {}

    async def new(self, name: str, version: str) -> ServedModel[Any, Any]:
        return await self.registry.load_version(name, version)

    async def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return await repository_index(self.registry, self.folder, ready_only)

    async def let_go(self, models: list[ServedModel[Any, Any]]) -> None:
        for model in models:
            self.background(self.registry.retire(model))

    def start_polling(self) -> None:
        if self.settings.model_poll_s > 0:
            self.background(self._poll(self.settings.model_poll_s))

    async def _poll(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.scan()
            except Exception:
                logger.exception("the scan of the model repository failed")

    async def load(self, name: str, version: str | None, seen: Plan | None = None) -> dict[str, Any]:
        """Serve version `version` of model `name` (None: the newest on disk), in every process; a
        model not served before is added. With `seen`, the plan the caller decided on, nothing changes
        if the model's entry has changed since: a scan that chose the newest version must not undo a
        version pinned by a call (or loaded by another process's scan) while it waited for the lock.
        Raises `NotFound`, or `InvalidInput` with why it failed."""
        started = time.monotonic()
        check_name(name)
        async with self.folder.locked():
            plan = await self._caught_up()
            if seen is not None and plan.models.get(name) != seen.models.get(name):
                return outcome(name, self.registry.served_versions().get(name), changed=False)
            try:
                versions = [folder.name for folder in version_folders(self.settings.model_dir, name)]
            except ModelLoadError as exc:
                raise NotFound(f"model {name!r} cannot be loaded: {exc}") from None
            target = versions[-1] if version is None else version
            if target not in versions:
                raise NotFound(
                    f"model {name} has no version {target!r} in {self.settings.model_dir / name}; the "
                    f"versions there are {', '.join(versions)}"
                )
            served = self.registry.served_versions().get(name)
            entry = Entry(target, pinned=version is not None)
            if served == target and plan.models.get(name) == entry:
                return outcome(name, target, changed=False)
            if served != target:
                try:
                    model = await self.registry.load_version(name, target)
                except ModelLoadError as exc:
                    self.folder.record(name, target, str(exc))
                    raise InvalidInput(
                        f"model {name} version {target} was not loaded, and what was served still is: {exc}"
                    ) from None
                self.folder.record(name, target, None)
                replaced = [self.registry.swap(model)]
            else:
                replaced = []
            return await self._publish(plan.changed(name, entry), name, replaced, started)

    async def unload(self, name: str) -> dict[str, Any]:
        """Stop serving model `name` in every process; its requests in flight finish first."""
        started = time.monotonic()
        async with self.folder.locked():
            plan = await self._caught_up()
            if name not in self.registry.names() and name not in plan.models:
                raise NotFound(
                    f"model {name!r} is not served here; the models are {', '.join(self.registry.names())}"
                )
            if self.registry.unloaded(name):
                return {"name": name, "state": "UNAVAILABLE", "changed": False}
            replaced = [self.registry.unload(name)]
            return await self._publish(plan.changed(name, Entry(None)), name, replaced, started)

    async def _caught_up(self) -> Plan:
        """The plan, applied here first if this process is behind it."""
        plan = self.folder.read()
        if plan.generation > self.applied:
            await self.apply(plan)
        return plan

    async def _publish(
        self, plan: Plan, name: str, replaced: list[ServedModel[Any, Any] | None], started: float
    ) -> dict[str, Any]:
        """Write `plan`, which this process already serves; wait for the others to serve it too; then let
        the replaced version go."""
        async with self.applying:
            self.applied = plan.generation
            self.folder.publish(plan)
            self.acknowledge({})
        acks, behind = await self.folder.wait_for(
            plan.generation, self.waits_for, ACK_TIMEOUT_S, [os.getpid()]
        )
        await self.let_go([model for model in replaced if model is not None])
        seconds = time.monotonic() - started
        self.metrics.swap_time.labels(name).observe(seconds)
        problems = {ack.pid: ack.problems[name] for ack in acks if name in ack.problems}
        if behind or problems:
            raise ChangeIncomplete(
                f"model {name} changed in this process, but "
                + "; ".join(
                    [f"process {pid} did not apply it within {ACK_TIMEOUT_S:.0f} s" for pid in behind]
                    + [f"process {pid} could not apply it: {problem}" for pid, problem in problems.items()]
                )
            )
        version = plan.models[name].version
        logger.info("model %s is now %s in every process, after %.2f s", name,
                    f"version {version}" if version else "unloaded", seconds)  # fmt: skip
        return {**outcome(name, version, changed=True), "seconds": round(seconds, 3)}

    async def scan(self) -> list[str]:
        """Load each served model's newest version on disk once its folder is complete (its files match
        the checksums of its metadata.json), unless a version is pinned; with RNNSERVE_MODELS=*, add the
        models that appeared. The models changed."""
        plan = self.folder.read()
        wanted = {n: e for n, e in plan.models.items() if e.version is not None and not e.pinned}
        if self.settings.models.strip() == "*":
            for name in model_names(self.settings.model_dir):
                if name not in plan.models and name not in self.registry.names():
                    wanted[name] = Entry("")
        changed = []
        for name, entry in wanted.items():
            try:
                newest = version_folders(self.settings.model_dir, name)[-1]
            except ModelLoadError:
                continue
            if newest.name == entry.version or not self._worth_trying(name, newest.name, newest):
                continue
            try:
                await asyncio.to_thread(
                    locate, self.settings.model_dir, name, self.settings.backend, newest.name
                )
                if (await self.load(name, None, seen=plan))["changed"]:
                    changed.append(name)
            except (ModelLoadError, InvalidInput, NotFound, ChangeIncomplete) as exc:
                self._scanned[(name, newest.name)] = fingerprint(newest)
                async with self.folder.locked():
                    self.folder.record(name, newest.name, str(exc))
                logger.warning("the scan leaves model %s as it is: version %s: %s", name, newest.name, exc)
        return changed

    def _worth_trying(self, name: str, version: str, folder: Any) -> bool:
        """False for a version whose folder is as it was when it last failed."""
        return self._scanned.get((name, version)) != fingerprint(folder)


def fingerprint(folder: Any) -> tuple[tuple[str, int, int], ...]:
    """Each file of a version folder with its size and modification time."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
    except OSError:
        return ()
