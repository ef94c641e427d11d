"""The repository calls on the real app over ASGI: the index with each version's state, load and unload
behind admin keys, versions swapped while requests are in flight, broken versions that leave the old
one serving, and the poll that serves a new version once its folder is complete."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service.config import Settings
from service.lifecycle.manager import ModelsLifecycle
from service.lifecycle.start import serving_models
from service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from conftest import ServeApp

ADMIN = {"X-API-Key": "admin-key"}
SERIES = {"series": [float(i % 12) for i in range(48)], "horizon": 3}
FOREVER_MS = 3_600_000.0


@pytest.fixture
def repository(models_dir: Path, tmp_path: Path) -> Path:
    """A repository of its own: digit_lstm and sine_gru with their committed versions."""
    root = tmp_path / "models"
    for name in ("digit_lstm", "sine_gru"):
        shutil.copytree(models_dir / name, root / name)
    return root


def settings(repository: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_dir": repository,
        "forecast_model": "sine_gru",
        "models": "",
        "admin_keys": "admin-key",
    } | extra


async def forecast_version(client: httpx.AsyncClient, **extra: Any) -> str:
    response = await client.post("/forecast", json=SERIES | extra)
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


async def index(client: httpx.AsyncClient) -> dict[tuple[str, str], dict[str, str]]:
    response = await client.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {(entry["name"], entry["version"]): entry for entry in response.json()}


def add_version(repository: Path, name: str, source: str, version: str) -> Path:
    folder = repository / name / version
    shutil.copytree(repository / name / source, folder)
    return folder


def rewrite_checksums(folder: Path) -> None:
    """Make metadata.json's checksums match the files as they are now."""
    metadata = json.loads((folder / "metadata.json").read_text())
    for filename, record in metadata["files"].items():
        data = (folder / filename).read_bytes()
        record.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "metadata.json").write_text(json.dumps(metadata))


async def test_the_index_names_every_version_and_why_it_is_not_served(
    serve: ServeApp, repository: Path
) -> None:
    async with serve(**settings(repository)) as (_, client):
        entries = await index(client)
        assert entries[("sine_gru", "2")] == {"name": "sine_gru", "version": "2", "state": "READY"}
        assert entries[("sine_gru", "1")]["state"] == "UNAVAILABLE"
        assert entries[("sine_gru", "1")]["reason"] == "not loaded: version 2 is served"
        ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
        assert {(e["name"], e["version"]) for e in ready} == {("digit_lstm", "5"), ("sine_gru", "2")}


async def test_loading_and_unloading_need_an_admin_key(serve: ServeApp, repository: Path) -> None:
    load = "/v2/repository/models/sine_gru/load"
    async with serve(**settings(repository, admin_keys="")) as (_, client):
        response = await client.post(load)
        assert response.status_code == 403
        assert "RNNSERVE_ADMIN_KEYS" in response.json()["error"]
    async with serve(**settings(repository, api_keys="user-key")) as (_, client):
        assert (await client.post(load, headers={"X-API-Key": "user-key"})).status_code == 403
        assert (await client.post(load)).status_code == 401  # the API keys ask first
        assert (
            await client.post("/v2/repository/models/sine_gru/unload", headers={"X-API-Key": "x"})
        ).status_code == 401
        response = await client.post(load, headers={"Authorization": "Bearer admin-key"})
        assert response.status_code == 200, response.text
        # An admin key is an API key too.
        assert (await client.post("/forecast", json=SERIES, headers=ADMIN)).status_code == 200
    async with serve(**settings(repository)) as (_, client):
        response = await client.post(load, headers={"X-API-Key": "user-key"})
        assert response.status_code == 403
        assert "admin" in response.json()["error"]
        assert (await client.post(load)).status_code == 401


async def test_a_version_is_swapped_in_and_back(serve: ServeApp, repository: Path) -> None:
    async with serve(**settings(repository)) as (_, client):
        load = "/v2/repository/models/sine_gru/load"
        response = await client.post(load, json={"parameters": {"version": "1"}}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json() | {"seconds": 0} == {
            "name": "sine_gru", "version": "1", "state": "READY", "changed": True, "seconds": 0
        }  # fmt: skip
        assert await forecast_version(client) == "1"
        v2 = await client.post("/v2/models/sine_gru/infer", json={"inputs": []})
        assert v2.status_code == 400  # the model answers, as version 1
        assert (await client.get("/v2/models/sine_gru")).json()["versions"] == ["1"]
        # Again: nothing to do.
        again = await client.post(load, json={"parameters": {"version": 1}}, headers=ADMIN)
        assert again.json()["changed"] is False
        # No version: the newest on disk.
        assert (await client.post(load, headers=ADMIN)).json()["version"] == "2"
        assert await forecast_version(client) == "2"
        entries = await index(client)
        assert entries[("sine_gru", "1")]["reason"] == "not loaded: version 2 is served"
        metrics = (await client.get("/metrics")).text
        assert 'rnnserve_model_loads_total{model="sine_gru",result="loaded"} 3.0' in metrics
        assert 'rnnserve_model_swap_seconds_count{model="sine_gru"} 2.0' in metrics
        assert 'model="sine_gru",precision="fp32",provider="CPUExecutionProvider",version="1"} 0.0' in metrics


async def test_a_request_that_chose_the_old_version_finishes_on_it(serve: ServeApp, repository: Path) -> None:
    """A V2 request holds its model from the moment it names it: swapped out while the request's body
    is still arriving, the old version answers it, and is let go only then."""
    series = [float(i % 12) for i in range(48)]
    body = json.dumps({"inputs": [
        {"name": "series", "shape": [1, 48], "datatype": "FP32", "data": series},
        {"name": "horizon", "shape": [1, 1], "datatype": "INT32", "data": [3]},
    ]}).encode()  # fmt: skip
    reading, rest_of_body = asyncio.Event(), asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:20]
        reading.set()  # the route asks for more: it has named its model, and reads the body
        await rest_of_body.wait()
        yield body[20:]

    async with serve(**settings(repository)) as (_, client):
        slow = asyncio.ensure_future(client.post("/v2/models/sine_gru/infer", content=chunks()))
        await asyncio.wait_for(reading.wait(), 30)
        load = await client.post(
            "/v2/repository/models/sine_gru/load", json={"parameters": {"version": "1"}}, headers=ADMIN
        )
        assert load.status_code == 200  # the swap does not wait for the old version's requests
        assert await forecast_version(client) == "1"
        assert (await index(client))[("sine_gru", "2")]["state"] == "UNLOADING"
        rest_of_body.set()
        answer = await slow
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "2"
        for _ in range(100):
            if (await index(client))[("sine_gru", "2")]["state"] == "UNAVAILABLE":
                break
            await asyncio.sleep(0.05)
        assert (await index(client))[("sine_gru", "2")]["state"] == "UNAVAILABLE"


async def test_unloading_turns_to_the_next_model_of_the_task_then_503(
    serve: ServeApp, repository: Path
) -> None:
    shutil.copytree(repository / "sine_gru", repository / "sine_copy")
    async with serve(**settings(repository, models="sine_copy")) as (_, client):
        unload = await client.post("/v2/repository/models/sine_gru/unload", headers=ADMIN)
        assert unload.status_code == 200, unload.text
        response = await client.post("/forecast", json=SERIES)
        assert response.status_code == 200 and response.json()["model"] == "sine_copy"
        named = await client.post("/forecast", json=SERIES | {"model": "sine_gru"})
        assert named.status_code == 503
        assert "unloaded" in named.json()["detail"] and "/load" in named.json()["detail"]
        assert (await client.post("/v2/repository/models/sine_copy/unload", headers=ADMIN)).status_code == 200
        refused = await client.post("/forecast", json=SERIES)
        assert refused.status_code == 503
        assert "was unloaded" in refused.json()["detail"]
        # Unloaded on purpose is not "not ready": a load balancer keeps sending digits here.
        assert (await client.get("/health/ready")).status_code == 200
        assert (await index(client))[("sine_gru", "2")]["reason"] == "not loaded: model sine_gru was unloaded"
        assert (await client.post("/v2/repository/models/sine_gru/load", headers=ADMIN)).status_code == 200
        assert (await client.post("/forecast", json=SERIES)).json()["model"] == "sine_gru"
        assert (await client.post("/v2/repository/models/nothing/unload", headers=ADMIN)).status_code == 404
        outside = await client.post("/v2/repository/models/..%2E/load", headers=ADMIN)
        assert outside.status_code == 404 and "cannot name a model" in outside.json()["error"]


async def test_a_model_dropped_into_the_repository_is_added_by_a_load(
    serve: ServeApp, repository: Path
) -> None:
    async with serve(**settings(repository)) as (_, client):
        shutil.copytree(repository / "sine_gru", repository / "sine_new")
        assert (await client.post("/forecast", json=SERIES | {"model": "sine_new"})).status_code == 422
        response = await client.post("/v2/repository/models/sine_new/load", headers=ADMIN)
        assert response.status_code == 200, response.text
        answer = (await client.post("/forecast", json=SERIES | {"model": "sine_new"})).json()
        assert (answer["model"], answer["version"]) == ("sine_new", "2")
        assert "sine_new" in [m["name"] for m in (await client.get("/models")).json()["models"]]
        # The API description follows: the new model is one of the choices of a forecast's "model".
        described = (await client.get("/openapi.json")).json()["paths"]["/forecast"]["post"]["parameters"]
        assert "sine_new" in next(p for p in described if p["name"] == "model")["schema"]["enum"]


@pytest.mark.parametrize("fault", ["wrong checksum", "corrupt onnx", "missing folder"])
async def test_a_broken_version_leaves_the_old_one_serving(
    serve: ServeApp, repository: Path, fault: str
) -> None:
    async with serve(**settings(repository)) as (_, client):
        # Each fault appears after start-up, beside the version served.
        if fault == "wrong checksum":
            folder = add_version(repository, "sine_gru", "1", "3")
            with (folder / "model.onnx").open("ab") as handle:
                handle.write(b"\0")
            expected = "metadata.json says"
        elif fault == "corrupt onnx":
            folder = add_version(repository, "sine_gru", "1", "3")
            (folder / "model.onnx").write_bytes(b"not an onnx graph at all")
            rewrite_checksums(folder)
            expected = "model.onnx"
        version = "7" if fault == "missing folder" else "3"
        response = await client.post(
            "/v2/repository/models/sine_gru/load", json={"parameters": {"version": version}}, headers=ADMIN
        )
        assert response.status_code == (404 if fault == "missing folder" else 400), response.text
        error = response.json()["error"]
        if fault == "missing folder":
            assert "has no version '7'" in error
        else:
            assert "was not loaded, and what was served still is" in error and expected in error
            entry = (await index(client))[("sine_gru", "3")]
            assert entry["state"] == "UNAVAILABLE" and expected in entry["reason"]
            failed = 'rnnserve_model_loads_total{model="sine_gru",result="failed"} 1.0'
            metrics = (await client.get("/metrics")).text
            assert failed in metrics, [line for line in metrics.splitlines() if "loads" in line]
        assert await forecast_version(client) == "2"
        assert (await client.get("/health/ready")).status_code == 200


async def test_the_poll_serves_a_version_once_its_folder_is_complete(
    serve: ServeApp, repository: Path
) -> None:
    async with serve(**settings(repository, model_poll_s=0.1)) as (_, client):
        folder = repository / "sine_gru" / "3"
        folder.mkdir()
        # Half copied: the metadata is there, the graph not yet.
        shutil.copy(repository / "sine_gru" / "1" / "metadata.json", folder)
        await asyncio.sleep(0.6)
        assert await forecast_version(client) == "2"
        assert "model.onnx: missing" in (await index(client))[("sine_gru", "3")]["reason"]
        for name in ("model.onnx", "model.pt"):
            shutil.copy(repository / "sine_gru" / "1" / name, folder)
        for _ in range(100):
            if await forecast_version(client) == "3":
                break
            await asyncio.sleep(0.05)
        assert await forecast_version(client) == "3"
        assert (await index(client))[("sine_gru", "3")]["state"] == "READY"


async def test_a_pinned_version_stays_when_the_poll_sees_a_newer_one(
    serve: ServeApp, repository: Path
) -> None:
    async with serve(**settings(repository, model_poll_s=0.1, model_versions={"sine_gru": "1"})) as (
        _,
        client,
    ):
        add_version(repository, "sine_gru", "2", "3")
        await asyncio.sleep(0.6)
        assert await forecast_version(client) == "1"
        # A load that names no version unpins it: the newest, and the poll follows from then on.
        await client.post("/v2/repository/models/sine_gru/load", headers=ADMIN)
        assert await forecast_version(client) == "3"


async def test_a_scan_leaves_a_version_pinned_while_it_waited_for_the_lock(repository: Path) -> None:
    # The scan reads the plan, then waits for the folder's lock to load the newest version. A load call
    # that pinned a version in between (seen in a container with two workers, the poll at 1 s) must stay.
    async with serving_models(Settings(**settings(repository)), ServiceMetrics()) as (registry, lifecycle):
        assert isinstance(lifecycle, ModelsLifecycle)
        add_version(repository, "sine_gru", "2", "3")
        seen = lifecycle.folder.read()  # what the scan decided on: version 2, not pinned; 3 is newer
        await lifecycle.load("sine_gru", "1")
        outcome = await lifecycle.load("sine_gru", None, seen=seen)  # the scan's load, once it has the lock
        assert outcome == {"name": "sine_gru", "version": "1", "state": "READY", "changed": False}
        assert registry.served_versions()["sine_gru"] == "1"
        assert await lifecycle.scan() == []  # and a scan that reads the plan now leaves the pin as well
        assert registry.served_versions()["sine_gru"] == "1"
        # Decided on the plan as it is, the same load goes ahead: the newest version.
        assert (await lifecycle.load("sine_gru", None, seen=lifecycle.folder.read()))["version"] == "3"
