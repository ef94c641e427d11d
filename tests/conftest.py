"""Shared fixtures: where the committed models and the real MNIST data live."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"


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
