"""Shared fixtures: where the committed models and the real MNIST data live."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

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
