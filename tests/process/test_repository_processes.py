"""Model versions changed while real servers run: one worker, two workers with their models inline, and
two workers in front of a model engine. Triton's own client loads, unloads and reads the index; SIGHUP
and the poll serve a version copied into the repository; every worker answers with the new version
once the call has returned."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from serving import start_service
from tritonclient.utils import InferenceServerException

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
ADMIN_KEY = "admin-key"
ADMIN = {"X-API-Key": ADMIN_KEY}
SERIES = {"series": [float(i % 12) for i in range(48)], "horizon": 3, "model": "sine_gru"}
MODES = {
    "1 worker": {"workers": "1"},
    "2 workers inline": {"workers": "2", "engine": "inline"},
    "2 workers, engine": {"workers": "2", "engine": "process"},
}


def repository(root: Path) -> Path:
    for name in ("digit_lstm", "sine_gru"):
        shutil.copytree(MODELS_DIR / name, root / name)
    return root


def versions_answered(url: str, requests: int = 16) -> set[str]:
    """The versions of sine_gru that answer `requests` requests, each on a connection of its own (so
    that they reach every worker)."""
    seen = set()
    for _ in range(requests):
        response = httpx.post(f"{url}/forecast", json=SERIES, headers={"Connection": "close"}, timeout=30)
        assert response.status_code == 200, response.text
        seen.add(str(response.json()["version"]))
    return seen


def wait_for_version(url: str, version: str, timeout_s: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if versions_answered(url, 4) == {version}:
            break
        time.sleep(0.2)
    return versions_answered(url)


@pytest.fixture(scope="module", params=list(MODES), ids=list(MODES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, int]]:
    root = repository(tmp_path_factory.mktemp("repository") / "models")
    settings = MODES[request.param] | {
        "forecast_model": "sine_gru", "models": "", "admin_keys": ADMIN_KEY, "threads": "1",
    }  # fmt: skip
    log = tmp_path_factory.mktemp("logs") / "server.log"
    url, process = start_service(root, log, **settings)
    try:
        yield url, root, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
        assert "Traceback" not in log.read_text(errors="replace")


def test_tritonclient_loads_and_unloads_in_every_worker(server: tuple[str, Path, int]) -> None:
    url, _, _ = server
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    index = client.get_model_repository_index()
    assert {"name": "sine_gru", "version": "2", "state": "READY"} in index
    with pytest.raises(InferenceServerException, match="admin key"):
        client.unload_model("sine_gru")
    client.unload_model("sine_gru", headers=ADMIN)
    assert not client.is_model_ready("sine_gru")
    refused = httpx.post(f"{url}/forecast", json=SERIES, timeout=30)
    assert refused.status_code == 503 and "unloaded" in refused.json()["detail"]
    client.load_model("sine_gru", headers=ADMIN)
    assert client.is_model_ready("sine_gru")
    # A version by name, through the protocol's parameters: every worker answers with it at once.
    pinned = httpx.post(
        f"{url}/v2/repository/models/sine_gru/load",
        json={"parameters": {"version": "1"}},
        headers=ADMIN,
        timeout=120,
    )
    assert pinned.status_code == 200, pinned.text
    assert versions_answered(url) == {"1"}
    client.load_model("sine_gru", headers=ADMIN)  # no version: the newest
    assert versions_answered(url) == {"2"}
    ready = client.get_model_repository_index(query_params=None)
    assert [e for e in ready if e["name"] == "sine_gru" and e["state"] == "READY"] == [
        {"name": "sine_gru", "version": "2", "state": "READY"}
    ]


def test_sighup_serves_a_version_copied_in(server: tuple[str, Path, int]) -> None:
    url, root, pid = server
    shutil.copytree(root / "sine_gru" / "1", root / "sine_gru" / "3")
    try:
        os.kill(pid, signal.SIGHUP)
        assert wait_for_version(url, "3") == {"3"}
    finally:
        httpx.post(f"{url}/v2/repository/models/sine_gru/load", json={"parameters": {"version": "2"}},
                   headers=ADMIN, timeout=120)  # fmt: skip
        shutil.rmtree(root / "sine_gru" / "3")
    assert versions_answered(url) == {"2"}


@pytest.mark.parametrize("mode", list(MODES))
def test_the_poll_serves_a_version_once_complete(mode: str, tmp_path: Path) -> None:
    root = repository(tmp_path / "models")
    settings = MODES[mode] | {
        "forecast_model": "sine_gru",
        "models": "",
        "model_poll_s": "0.2",
        "threads": "1",
    }
    url, process = start_service(root, tmp_path / "server.log", **settings)
    try:
        folder = root / "sine_gru" / "3"
        folder.mkdir()
        shutil.copy(root / "sine_gru" / "1" / "model.onnx", folder)  # the metadata comes last
        time.sleep(1.0)
        assert versions_answered(url) == {"2"}
        shutil.copy(root / "sine_gru" / "1" / "model.pt", folder)
        shutil.copy(root / "sine_gru" / "1" / "metadata.json", folder)
        assert wait_for_version(url, "3") == {"3"}
    finally:
        process.terminate()
        process.wait(timeout=60)
