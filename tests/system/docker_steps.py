"""The steps the container tests take on a Docker engine (scripts/containers.py): `docker` and
`docker-compose` commands that fail the test in one line, image builds, and the step timings printed at
the end of the module (pytest -s)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import containers  # scripts/containers.py (pytest's pythonpath)
import pytest
from dockerfiles import COMPOSE_FILE

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


def fail_on(error: containers.ContainerError) -> None:
    pytest.fail(str(error), pytrace=False)


def docker(*args: str, timeout: float = 300) -> str:
    try:
        return containers.run("docker", *args, timeout=timeout)
    except containers.ContainerError as error:
        fail_on(error)
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


def build(service: str, pip_conf: str, log: Path) -> containers.BuildSpec:
    started = time.monotonic()
    try:
        spec = containers.build_service(service, pip_conf, log)
    except containers.ContainerError as error:
        fail_on(error)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", spec.image))
    record(f"build {spec.image}", f"{time.monotonic() - started:.0f} s, image {size / 1e9:.2f} GB")
    return spec


@dataclass
class Container:
    id: str
    url: str
