"""What every process of the service agrees on about its models: one plan, in one folder.

The plan says, for each model, whether it is served and which version (`plan.json`, with a generation
that grows with each change). Whoever changes it (a repository call, the poll, SIGHUP) holds the
folder's lock, checks the new version first, and writes the plan whole (a new file renamed over the
old one, so no reader sees half of it). Every process that serves models watches the plan and
acknowledges each generation once it serves it (`acks/<pid>.json`, with what it could not do), so the
process that made a change can wait until every other one has made it too.

A single-process service keeps the folder in a temporary directory of its own; with several
processes, the server makes it before it starts them and every process finds it through
`Settings.control_dir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Role = Literal["models", "front"]
"""What a process acknowledges: `models` runs the models (a worker with its models inline, or the
model engine); `front` checks inputs and answers for a model engine's models."""


@dataclass(frozen=True)
class Entry:
    """One model in the plan: the version to serve, or None once unloaded."""

    version: str | None
    pinned: bool = False
    """True when a version was asked for (RNNSERVE_MODEL_VERSIONS or a load call that names one): the
    poll then leaves the model at it rather than move it to the newest version on disk."""


@dataclass(frozen=True)
class Plan:
    generation: int
    models: dict[str, Entry] = field(default_factory=dict)

    def served(self) -> dict[str, str]:
        """The version of each model that is served."""
        return {name: entry.version for name, entry in self.models.items() if entry.version is not None}

    def changed(self, name: str, entry: Entry) -> Plan:
        return replace(self, generation=self.generation + 1, models={**self.models, name: entry})

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "models": {n: {"version": e.version, "pinned": e.pinned} for n, e in self.models.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        models = {
            str(name): Entry(None if e.get("version") is None else str(e["version"]), bool(e.get("pinned")))
            for name, e in data.get("models", {}).items()
        }
        return cls(int(data["generation"]), models)


@dataclass(frozen=True)
class Ack:
    """What one process serves: the plan's generation it has applied, and what it could not apply."""

    pid: int
    role: Role
    generation: int
    problems: dict[str, str]


class ControlFolder:
    """The plan, its lock, and the processes' acknowledgements, in one folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.plan_file = path / "plan.json"
        self.acks = path / "acks"

    @classmethod
    def create(cls, path: Path, plan: Plan) -> ControlFolder:
        """A new folder at `path` (which may exist, empty) holding `plan` as generation 1."""
        folder = cls(path)
        folder.acks.mkdir(parents=True, exist_ok=True)
        folder.publish(plan)
        return folder

    def read(self) -> Plan:
        return Plan.from_json(json.loads(self.plan_file.read_text(encoding="utf-8")))

    def stamp(self) -> tuple[int, int]:
        """Changes whenever the plan is written (a new file each time): a cheap look."""
        stat = self.plan_file.stat()
        return stat.st_ino, stat.st_mtime_ns

    def publish(self, plan: Plan) -> None:
        write_whole(self.plan_file, plan.to_json())

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the folder's lock: one change of the plan at a time, across every process."""
        with (self.path / "lock").open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def failures(self) -> dict[str, dict[str, str]]:
        """Why each version that failed to load (by a call, the poll or SIGHUP) is not served."""
        try:
            failures: dict[str, dict[str, str]] = json.loads((self.path / "failures.json").read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return failures

    def record(self, name: str, version: str, failure: str | None) -> None:
        """Keep why version `version` of model `name` failed to load (None: it loaded); hold the lock."""
        failures = self.failures()
        versions = failures.setdefault(name, {})
        if failure is None:
            versions.pop(version, None)
        else:
            versions[version] = failure
        write_whole(self.path / "failures.json", failures)

    def acknowledge(self, ack: Ack) -> None:
        write_whole(self.acks / f"{ack.pid}.json", {
            "role": ack.role, "generation": ack.generation, "problems": ack.problems,
        })  # fmt: skip

    def join(self, role: Role) -> None:
        """Say, as a process starts and before it reads the plan, that it serves none of it yet
        (generation 0): a change made while it loads its models waits for it to catch up, rather than
        answer while it would still serve the old version."""
        self.acknowledge(Ack(os.getpid(), role, 0, {}))

    def forget(self, pid: int) -> None:
        (self.acks / f"{pid}.json").unlink(missing_ok=True)

    def live_acks(self, role: Role) -> list[Ack]:
        """The acknowledgements of the processes of `role` that are alive; a dead one's file goes."""
        acks = []
        for path in self.acks.glob("*.json"):
            pid = int(path.stem)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being replaced, or gone
            if not alive(pid):
                path.unlink(missing_ok=True)
                continue
            if data.get("role") == role:
                acks.append(Ack(pid, role, int(data["generation"]), dict(data.get("problems", {}))))
        return acks

    async def wait_for(
        self, generation: int, role: Role, timeout_s: float, but: Iterable[int] = ()
    ) -> tuple[list[Ack], list[int]]:
        """Wait until every live process of `role` (but those in `but`) has applied `generation`, for at
        most `timeout_s`: their acknowledgements, and the processes still behind."""
        skipped = set(but)
        deadline = time.monotonic() + timeout_s
        while True:
            acks = [ack for ack in self.live_acks(role) if ack.pid not in skipped]
            behind = [ack.pid for ack in acks if ack.generation < generation]
            if not behind or time.monotonic() > deadline:
                return [ack for ack in acks if ack.generation >= generation], behind
            await asyncio.sleep(0.02)


def write_whole(path: Path, content: dict[str, Any]) -> None:
    """Write JSON so that a reader sees the old file or the new one, never a part."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(content), encoding="utf-8")
    os.replace(scratch, path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
