"""A process that starts while another changes the models: it says it is there before it reads the plan,
so the change waits for it, and it serves the plan as it is once loaded, not as it was when it began."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from service.lifecycle import manager
from service.lifecycle.control import ControlFolder, Entry, Plan
from service.registry import ModelRegistry

if TYPE_CHECKING:
    from conftest import ServeApp

SERIES = {"series": [float(i % 12) for i in range(48)], "horizon": 3}


def ack_of(folder: ControlFolder, pid: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder.acks / f"{pid}.json").read_text(encoding="utf-8"))
    return data


async def test_a_change_made_while_a_worker_loads_is_served_once_it_starts(
    serve: ServeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = ControlFolder.create(tmp_path / "control", Plan(1, {"sine_gru": Entry("2")}))
    # The follower's watch never fires within the test: what is served comes from the start alone.
    monkeypatch.setattr(manager, "PLAN_WATCH_S", 3600.0)
    opened = ModelRegistry.open.__func__  # type: ignore[attr-defined]
    seen_while_loading = []

    async def open_then_another_process_unloads(cls: type, *args: Any, **kwargs: Any) -> ModelRegistry:
        seen_while_loading.append(ack_of(folder, os.getpid()))
        registry: ModelRegistry = await opened(cls, *args, **kwargs)
        async with folder.locked():  # what a coordinating worker does on an unload call
            folder.publish(folder.read().changed("sine_gru", Entry(None)))
        return registry

    monkeypatch.setattr(ModelRegistry, "open", classmethod(open_then_another_process_unloads))
    settings = {"control_dir": folder.path, "forecast_model": "sine_gru", "models": ""}
    async with serve(**settings) as (_, client):
        assert seen_while_loading == [{"role": "models", "generation": 0, "problems": {}}]
        refused = await client.post("/forecast", json=SERIES)
        assert refused.status_code == 503 and "unloaded" in refused.json()["detail"], refused.text
        assert ack_of(folder, os.getpid())["generation"] == 2
    assert not (folder.acks / f"{os.getpid()}.json").exists()


async def test_a_change_waits_for_a_process_that_has_joined_and_not_for_one_that_died(
    tmp_path: Path,
) -> None:
    folder = ControlFolder.create(tmp_path / "control", Plan(1, {"sine_gru": Entry("2")}))
    joins = (
        "import sys, time; from pathlib import Path; from service.lifecycle.control import ControlFolder;"
        "ControlFolder(Path(sys.argv[1])).join('models'); print('joined', flush=True); time.sleep(600)"
    )
    starting = subprocess.Popen([sys.executable, "-c", joins, str(folder.path)], stdout=subprocess.PIPE)
    try:
        assert starting.stdout is not None and starting.stdout.readline() == b"joined\n"
        folder.publish(folder.read().changed("sine_gru", Entry(None)))
        done, behind = await folder.wait_for(2, "models", timeout_s=0.3)
        assert (done, behind) == ([], [starting.pid])
        assert await folder.wait_for(2, "front", timeout_s=0.3) == ([], [])  # another role's change
    finally:
        starting.kill()
        starting.wait()
    assert await folder.wait_for(2, "models", timeout_s=0.3) == ([], [])
    assert list(folder.acks.iterdir()) == []
