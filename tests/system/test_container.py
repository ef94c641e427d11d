"""The container images, built and run for real on a Docker engine (scripts/containers.py: a Docker
engine started here when none runs, a stand-in for the base image when no registry answers, the host's
pip configuration for the build): the CPU image is built, started with `docker-compose --profile cpu
up`, turns healthy, answers, runs as uid 10001 on a read-only root, logs JSON lines, and stops on
SIGTERM with exit 0, answering the requests in flight; the `train-cpu` image is built and runs a dry-run
training. The GPU image's base cannot be pulled here: it is linted only (test_container_files.py, with
the other static checks). Step timings and image sizes are printed at the end (pytest -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import containers  # scripts/containers.py (pytest's pythonpath)
import httpx
import numpy as np
import pytest
import yaml
from docker_steps import (
    CONTAINER_TOOLS,
    PROJECT,
    START_TIMEOUT_S,
    TIMINGS,
    Container,
    build,
    compose,
    compose_env,
    docker,
    fail_on,
    inspect,
    record,
    timestamp,
)
from dockerfiles import BUILD_ARGS, COMPOSE_FILE, REPO_ROOT, copy_context, read_dockerfile
from serving import free_port

if TYPE_CHECKING:
    from conftest import RequireTool


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_context(tmp_path_factory.mktemp("context"))


def _newest_version(model: str) -> str:
    return max((p.name for p in (REPO_ROOT / "models" / model).iterdir() if p.name.isdigit()), key=int)


@pytest.fixture(scope="module")
def engine(require_tool: RequireTool) -> Iterator[containers.DockerEngine]:
    for command, package in CONTAINER_TOOLS.items():
        require_tool(command, package)
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(containers.DockerEngine())
            started = time.monotonic()
            how = containers.ensure_base_image(containers.CPU_BASE_IMAGE)
        except containers.ContainerError as error:
            fail_on(error)
        record(f"base image ({how})", f"{time.monotonic() - started:.0f} s")
        yield running
        print("\n" + "\n".join(f"{step:<44} {value}" for step, value in TIMINGS.items()))


@pytest.fixture(scope="module")
def pip_conf(engine: containers.DockerEngine) -> Iterator[str]:
    with containers.served_pip_config(containers.host_pip_config()) as conf:
        yield conf


@pytest.fixture(scope="module")
def cpu_image(pip_conf: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("api-cpu", pip_conf, tmp_path_factory.mktemp("build") / "api-cpu.log").image


@pytest.fixture(scope="module")
def api_container(cpu_image: str) -> Iterator[Container]:
    """`docker-compose --profile cpu up` on a free port, once Docker reports it healthy."""
    env = compose_env(HTTP_PORT=str(free_port()))
    compose("--profile", "cpu", "--profile", "train-cpu", "down", "--volumes", env=env)
    try:
        compose("--profile", "cpu", "up", "--detach", "--no-build", "api-cpu", env=env)
        container = Container(
            compose("ps", "-q", "api-cpu", env=env).strip(), f"http://127.0.0.1:{env['HTTP_PORT']}"
        )
        ready_at = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while (state := inspect(container.id)["State"])["Health"]["Status"] != "healthy":
            assert state["Status"] == "running", f"the container stopped:\n{docker('logs', container.id)}"
            assert time.monotonic() < deadline, (
                f"not healthy in {START_TIMEOUT_S:.0f} s:\n{docker('logs', container.id)}"
            )
            with contextlib.suppress(httpx.TransportError):
                if (
                    ready_at is None
                    and httpx.get(f"{container.url}/health/ready", timeout=1).status_code == 200
                ):
                    ready_at = time.time()
            time.sleep(0.1)
        started = timestamp(state["StartedAt"])
        healthy = min(timestamp(check["End"]) for check in state["Health"]["Log"] if check["ExitCode"] == 0)
        record("container start -> /health/ready 200", f"{(ready_at or healthy) - started:.1f} s")
        record("container start -> Docker: healthy", f"{healthy - started:.1f} s")
        yield container
    finally:
        compose("--profile", "cpu", "--profile", "train-cpu", "down", "--volumes", env=env)


IMAGE_CONTENTS = """
import hashlib, importlib.metadata as metadata, json, pathlib, service
package = pathlib.Path(service.__file__).parent
models = pathlib.Path("/app/models")
print(json.dumps({
    "distributions": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
    "package": str(package),
    "static": sorted(p.name for p in (package / "web" / "static").iterdir()),
    "models": {str(p.relative_to(models)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(models.rglob("*")) if p.is_file()},
    "app": sorted(p.name for p in pathlib.Path("/app").iterdir()),
}))
"""


def test_the_scripts_base_image_is_the_dockerfiles() -> None:
    assert containers.CPU_BASE_IMAGE in read_dockerfile(BUILD_ARGS).images()


def test_cpu_image_holds_the_service_and_models_and_nothing_else(cpu_image: str, build_context: Path) -> None:
    found = json.loads(docker("run", "--rm", "--entrypoint", "python", cpu_image, "-c", IMAGE_CONTENTS))
    assert "onnxruntime" in found["distributions"] and "rnnserve" in found["distributions"]
    cuda = [
        n for n in found["distributions"] if n.startswith(("nvidia", "torch", "onnxruntime-gpu", "triton"))
    ]
    assert not cuda, f"CUDA wheels in the CPU image: {cuda}"
    # A regular install from site-packages, with its package data; /app holds the models alone.
    assert "/site-packages/" in found["package"], found["package"]
    assert found["static"] == sorted(p.name for p in (build_context / "service/web/static").iterdir())
    assert found["app"] == ["models"]
    baked_in = {
        str(p.relative_to(build_context / "models")): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((build_context / "models").rglob("*"))
        if p.is_file()
    }
    assert found["models"] == baked_in


@pytest.mark.slow
def test_container_answers_a_digit_and_a_forecast(
    api_container: Container, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    for image, label in zip(images[:5], labels[:5], strict=True):
        response = httpx.post(
            f"{api_container.url}/predict/digit", json={"pixels": image.tolist()}, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["digit"] == int(label), body
        assert math.isclose(sum(body["probabilities"]), 1.0, abs_tol=1e-4)
        assert body["model"] == "digit_lstm" and body["version"] == _newest_version("digit_lstm")
    # The classic seed curve: y = sin(3x) + x on linspace(-3, 3, 100), the next 32 grid points.
    grid = np.linspace(-3, 3, 100)
    future = grid[-1] + (grid[1] - grid[0]) * np.arange(1, 33)
    history, truth = np.sin(3 * grid) + grid, np.sin(3 * future) + future
    response = httpx.post(
        f"{api_container.url}/forecast", json={"series": history.tolist(), "horizon": 32}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    forecast = np.asarray(body["forecast"])
    mae = float(np.abs(forecast - truth).mean())
    assert forecast.shape == (32,) and mae < 0.2, f"MAE {mae:.3f}"
    inner, outer = body["intervals"]["80"], body["intervals"]["95"]
    assert (np.asarray(outer["lower"]) <= np.asarray(inner["lower"]) + 1e-9).all()
    assert (np.asarray(inner["upper"]) <= np.asarray(outer["upper"]) + 1e-9).all()
    assert body["model"] == "series_gru" and body["version"] == _newest_version("series_gru")


WRITE_PROBE = """
import os, pathlib
status = pathlib.Path("/proc/1/status").read_text().splitlines()
print("pid1-uid", [line.split()[1] for line in status if line.startswith("Uid:")][0])
for path in ("/app/models/probe", "/probe", "/tmp/probe"):
    try:
        pathlib.Path(path).write_text("x")
        print(path, "written")
    except OSError as error:
        print(path, os.strerror(error.errno))
"""


@pytest.mark.slow
def test_container_runs_unprivileged_on_a_read_only_root(api_container: Container) -> None:
    details = inspect(api_container.id)
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    assert details["Config"]["User"] == "10001:10001"
    probe = docker("exec", api_container.id, "python", "-c", WRITE_PROBE).splitlines()
    assert probe == [
        "pid1-uid 10001",
        "/app/models/probe Read-only file system",
        "/probe Read-only file system",
        "/tmp/probe written",
    ]


@pytest.mark.slow
def test_container_logs_json_lines(api_container: Container) -> None:
    httpx.get(f"{api_container.url}/models", timeout=10)
    result = subprocess.run(
        ["docker", "logs", api_container.id], capture_output=True, text=True, env=compose_env()
    )
    lines = (result.stdout + result.stderr).splitlines()
    print("\nthe first log lines under compose:\n" + "\n".join(lines[:6]))
    records = [json.loads(line) for line in lines]  # compose's default RNNSERVE_LOG_FORMAT is json
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any(record.get("status") == 200 for record in records), "no request was logged"


async def keep_alive_client(url: str, route: str, body: dict[str, object], outcomes: Counter[str]) -> None:
    """Requests one after another on one connection until the service says `Connection: close`."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while True:
            try:
                response = await client.post(route, json=body)
            except httpx.TransportError as error:
                outcomes[f"lost: {type(error).__name__}"] += 1
                return
            outcomes[f"answered {response.status_code}"] += 1
            if response.headers.get("connection") == "close":
                outcomes["told to close"] += 1
                return


@pytest.mark.slow
def test_stop_answers_the_requests_in_flight_and_exits_0(api_container: Container) -> None:
    clients = 8
    digit: dict[str, object] = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}
    series: dict[str, object] = {"series": [math.sin(t / 4) for t in range(64)], "horizon": 8}
    outcomes: Counter[str] = Counter()

    async def load_then_stop() -> float:
        routes = [("/predict/digit", digit), ("/forecast", series)] * (clients // 2)
        tasks = [asyncio.ensure_future(keep_alive_client(api_container.url, *r, outcomes)) for r in routes]
        await asyncio.sleep(1.5)
        started = time.monotonic()
        stop = await asyncio.create_subprocess_exec(
            "docker-compose",
            "--file",
            str(COMPOSE_FILE),
            "stop",
            "api-cpu",
            env=compose_env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        assert await stop.wait() == 0
        return time.monotonic() - started

    took = asyncio.run(load_then_stop())
    state = inspect(api_container.id)["State"]
    record("stop under load (SIGTERM -> exited)", f"{took:.1f} s, {dict(outcomes)}")
    assert state["Status"] == "exited" and state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert outcomes["told to close"] == clients, dict(outcomes)
    assert set(outcomes) == {"answered 200", "told to close"}, dict(outcomes)


@pytest.mark.slow
def test_train_cpu_image_runs_a_dry_run(pip_conf: str, tmp_path: Path, mnist_dir: Path) -> None:
    image = build("train-cpu", pip_conf, tmp_path / "train-cpu.log").image
    # Compose runs it as HOST_UID:HOST_GID (default 1000:1000): the models folder must be theirs.
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (1000, 1000)
    models = tmp_path / "models"
    models.mkdir()
    os.chown(models, uid, gid)
    repo_models_before = sorted(p for p in (REPO_ROOT / "models").rglob("*"))
    env = compose_env(HOST_UID=str(uid), HOST_GID=str(gid))
    # Compose merges the volumes of a second file by their path in the container: this one puts our
    # folder where ./models would be, and the real MNIST (read-only) where the mnist volume would be.
    override = tmp_path / "dry-run.yml"
    volumes = [f"{models}:/app/models", f"{mnist_dir}:/app/data:ro"]
    override.write_text(yaml.safe_dump({"services": {"train-cpu": {"volumes": volumes}}}))
    resolved = yaml.safe_load(compose("--profile", "train-cpu", "config", env=env, override=override))
    binds = dict(reversed(v.split(":")[:2]) for v in resolved["services"]["train-cpu"]["volumes"])
    assert binds["/app/models"] == str(models) and binds["/app/data"] == str(mnist_dir), binds
    # One dry run: the digit model's (real MNIST), about twice as fast as the forecaster's.
    command = ["python", "-m", "training.digit", "--dry-run", "--data-dir", "data", "--out", "models"]
    started = time.monotonic()
    try:
        compose(
            "--profile",
            "train-cpu",
            "run",
            "--rm",
            "train-cpu",
            *command,
            env=env,
            timeout=600,
            override=override,
        )
    finally:
        compose("--profile", "cpu", "--profile", "train-cpu", "down", "--volumes", env=env)  # and its volumes
    record(f"{image}: digit dry run", f"{time.monotonic() - started:.0f} s")
    metadata = json.loads(next((models / "digit_lstm").glob("*/metadata.json")).read_text())
    assert metadata["training"]["dry_run"] is True
    assert {p.name for p in (models / "digit_lstm").glob("*/*")} >= {"metadata.json", "model.onnx"}
    assert sorted(p for p in (REPO_ROOT / "models").rglob("*")) == repo_models_before, (
        "it wrote into ./models"
    )


@pytest.mark.slow
def test_compose_serves_new_versions_from_the_mounted_repository(cpu_image: str) -> None:
    """The Compose sequence without the training: a new version written into the mounted repository is
    served by the poll, and a load call goes back to another, with no rebuild and no restart."""
    models = Path(tempfile.mkdtemp(prefix="rnnserve-compose-models-"))
    models.chmod(0o755)  # the service runs as uid 10001
    shutil.copytree(REPO_ROOT / "models", models, dirs_exist_ok=True)
    port = free_port()
    env = compose_env(
        COMPOSE_PROJECT_NAME=f"{PROJECT}-lifecycle", HTTP_PORT=str(port), MODELS_DIR=str(models),
        RNNSERVE_ADMIN_KEYS="compose-admin", RNNSERVE_MODEL_POLL_S="1",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    resolved = yaml.safe_load(compose("--profile", "cpu", "config", env=env))
    assert f"{models}:/app/models:ro" in resolved["services"]["api-cpu"]["volumes"]
    try:
        compose("--profile", "cpu", "up", "--detach", "--no-build", "api-cpu", env=env)
        container = compose("ps", "-q", "api-cpu", env=env).strip()
        deadline = time.monotonic() + START_TIMEOUT_S
        while inspect(container)["State"]["Health"]["Status"] != "healthy":
            assert time.monotonic() < deadline, f"not healthy:\n{docker('logs', container)}"
            time.sleep(0.2)
        started_at = inspect(container)["State"]["StartedAt"]
        newest = int(_newest_version("digit_lstm"))
        shutil.copytree(models / "digit_lstm" / "1", models / "digit_lstm" / str(newest + 1))
        image = {"pixels": [[0] * 12 + [200] * 4 + [0] * 12] * 28}

        def digit_version() -> str:
            return str(httpx.post(f"{url}/predict/digit", json=image, timeout=30).json()["version"])

        deadline = time.monotonic() + 60
        while (served := digit_version()) != str(newest + 1):
            assert time.monotonic() < deadline, f"still {served}:\n{docker('logs', container)}"
            time.sleep(0.5)
        load = httpx.post(
            f"{url}/v2/repository/models/digit_lstm/load", json={"parameters": {"version": "1"}},
            headers={"Authorization": "Bearer compose-admin"}, timeout=120,
        )  # fmt: skip
        assert load.status_code == 200, load.text
        assert digit_version() == "1"
        assert inspect(container)["State"]["StartedAt"] == started_at  # never restarted
    finally:
        compose("--profile", "cpu", "down", "--volumes", env=env)
        shutil.rmtree(models, ignore_errors=True)
