"""Shared fixtures: where the committed models and the real MNIST data live; every test's tier.

The tests are sorted by what they need, one folder per tier, and each test is marked with its tier's
name, so that `pytest -m unit` (or `-m "unit or app"`) selects by tier as well as by folder:

- unit: pure functions; the venv and real MNIST.
- app: the real app in-process over ASGI; the same.
- process: real uvicorn processes on 127.0.0.1; free ports, and hey for the soak and the benchmark.
- system: a Docker engine, haproxy, Chromium, kubectl; `require_tool` finds (or, as root, installs) them.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
MODELS_DIR = REPO_ROOT / "models"
TIERS = ("unit", "app", "process", "system")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, the folder under tests/ it lives in, before `-m` selects. (Tests
    that take tens of seconds, the training dry runs, carry `@pytest.mark.slow` themselves.)"""
    for item in items:
        folder = item.path.relative_to(TESTS_DIR).parts[0] if item.path.is_relative_to(TESTS_DIR) else ""
        if folder not in TIERS:
            raise pytest.UsageError(
                f"{item.nodeid} belongs to no tier: move it into tests/unit, tests/app, tests/process or "
                "tests/system, by what it needs (see tests/conftest.py)"
            )
        item.add_marker(folder)


def _data_dir() -> Path:
    configured = os.environ.get("RNNSERVE_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The torchvision-style MNIST root. Missing data is a failure, never a skip."""
    root = _data_dir()
    raw = root / "MNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte").exists() and not (raw / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"real MNIST not found under {raw}: set RNNSERVE_DATA_DIR to a folder holding "
            "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte "
            "(make and .ci/run set it to ../shared/data)"
        )
    return root


@pytest.fixture(scope="session")
def mnist_test_set(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8, 10000×28×28) and labels, read without torch."""
    raw = mnist_dir / "MNIST" / "raw"

    def pick(stem: str) -> Path:
        plain = raw / stem
        return plain if plain.exists() else raw / f"{stem}.gz"

    return _read_idx(pick("t10k-images-idx3-ubyte")), _read_idx(pick("t10k-labels-idx1-ubyte"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


# The service: its settings and the real app, served over ASGI with its lifespan. The service is
# imported inside the fixtures, so the training tests do not depend on it.

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from service.config import Settings

    ServeApp = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def service_settings(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings for a test app: the committed models and the defaults, overridden by keyword.
    No RNNSERVE_* variable of the caller's environment leaks in (RNNSERVE_DATA_DIR is the tests' own)."""
    from service.config import Settings

    for name in list(os.environ):
        if name.startswith("RNNSERVE_") and name != "RNNSERVE_DATA_DIR":
            monkeypatch.delenv(name)

    def make(**overrides: Any) -> Settings:
        return Settings(**{"model_dir": models_dir, **overrides})

    return make


@pytest.fixture
def serve(service_settings: Callable[..., Settings]) -> ServeApp:
    """`async with serve(max_delay_ms=5) as (app, client)`: the real app, started and stopped with its
    lifespan, and an httpx client talking to it over ASGI."""
    import httpx
    from asgi_lifespan import LifespanManager

    from service.app import create_app

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(service_settings(**overrides))
        async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve") as client:
                yield app, client

    return running


@pytest.fixture
async def api_client(serve: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with default settings on the committed models."""
    async with serve() as (_, http):
        yield http


# The programs the system tier drives. `require_tool(command, package)` finds one beside the interpreter
# (where pip puts hadolint), on PATH or in /usr/sbin (where Debian puts haproxy, dockerd and debootstrap).
# As root it installs a missing one from its Debian package first, as `make system-tools` does; otherwise,
# or when apt-get cannot install it, the test fails on one line that names the program and the command that
# provides it. A program no Debian package provides (kubectl new enough, hadolint) is asked for with
# `package=None` and `fix=` saying how to get it: it is never installed. Nothing is skipped.


class RequireTool(Protocol):
    def __call__(self, command: str, package: str | None, *, fix: str | None = None) -> str: ...


def _search_path() -> str:
    return os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]
    )


def _apt_get_install(package: str) -> str:
    """Install a Debian package; an empty string when it worked, apt-get's last complaint otherwise."""
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    done = subprocess.run(install, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:  # package lists may be missing or stale on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=environment, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=environment, check=False)
    lines = done.stderr.strip().splitlines() or [f"apt-get exited with {done.returncode}"]
    return "" if done.returncode == 0 else lines[-1]


@functools.cache
def find_tool(command: str, package: str | None, *, fix: str | None = None) -> str:
    """The path of `command`. When it is missing: as root, installs the Debian `package` (when one is named)
    and looks again; otherwise fails the test on one line that says how to get it (`fix`, or apt-get)."""
    found = shutil.which(command, path=_search_path())
    if found is not None:
        return found
    if fix is None:
        if package is None:
            raise TypeError(f"find_tool({command!r}): name its Debian package, or say how to get it (fix=)")
        fix = f"sudo apt-get install {package} (`make system-tools` as root installs every tool of this tier)"
    if package is None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{command} is missing: {fix}", pytrace=False)
    complaint = _apt_get_install(package)
    found = shutil.which(command, path=_search_path())
    if found is None:
        reason = complaint or f"{package} does not provide {command}"
        pytest.fail(f"{command} is missing and apt-get could not install it ({reason}): {fix}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def require_tool() -> RequireTool:
    """`require_tool("haproxy", "haproxy")`: the program's path, installed as root when missing.
    Session-scoped, so that module-scoped fixtures can ask for their programs too."""
    return find_tool
