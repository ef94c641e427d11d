"""The model repository: `<model_dir>/<name>/<version>/` with the model files and `metadata.json`.

The newest (highest integer) version of a model is the one served, unless a version is pinned
(`RNNSERVE_MODEL_VERSIONS`). Its file for the chosen backend must exist and match the size and sha256
that `metadata.json` records; anything else is a `ModelLoadError` whose message names the file and says
what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Backend = Literal["onnx", "torchscript"]
FILE_KEYS: dict[Backend, str] = {"onnx": "onnx_file", "torchscript": "torchscript_file"}


class ModelLoadError(Exception):
    """A model cannot be served; the message says which file and why."""


@dataclass(frozen=True)
class ModelArtifact:
    """One version of one model, its file for the chosen backend checked against its metadata."""

    name: str
    version: str
    directory: Path
    file: Path
    metadata: dict[str, Any]
    precision: str = "fp32"
    """The precision of `file`'s graph: fp32, or int8 for a quantized variant (`service.precision`)."""
    precision_reason: str = ""
    """Why this graph serves rather than the version's other one."""

    @property
    def task(self) -> str:
        return str(self.metadata.get("task", ""))

    def config(self, key: str) -> int:
        """An integer from the metadata's `config`, e.g. `context_length`."""
        value = self.metadata.get("config", {}).get(key)
        if not isinstance(value, int):
            raise ModelLoadError(
                f"{self.directory / 'metadata.json'}: config.{key} is {value!r}, expected an integer"
            )
        return value


def version_folders(model_dir: Path, name: str) -> list[Path]:
    """The integer version folders of model `name`, lowest first."""
    root = model_dir / name
    if not root.is_dir():
        raise ModelLoadError(
            f"{root}: no such folder; export the model there or point RNNSERVE_MODEL_DIR at the repository"
        )
    versions = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise ModelLoadError(f"{root}: holds no version folder (1, 2, ...); export the model there")
    return versions


def newest_version(model_dir: Path, name: str) -> Path:
    """The folder of the highest integer version of model `name`."""
    return version_folders(model_dir, name)[-1]


def pinned_version(model_dir: Path, name: str, version: str) -> Path:
    """The folder of version `version` of model `name`, which must exist."""
    versions = version_folders(model_dir, name)
    for folder in versions:
        if folder.name == version or (version.isdigit() and int(folder.name) == int(version)):
            return folder
    raise ModelLoadError(
        f"{model_dir / name}: has no version {version!r} (RNNSERVE_MODEL_VERSIONS pins it); the versions "
        f"there are {', '.join(p.name for p in versions)}: pin one of them or leave {name} out to serve "
        "the newest"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(directory: Path) -> dict[str, Any]:
    path = directory / "metadata.json"
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing; every model version needs its metadata.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc}); restore it or re-export the model") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{path}: holds {type(metadata).__name__}, expected a JSON object")
    return metadata


def verify(path: Path, record: Any) -> None:
    """Check a model file against its `files` entry in the metadata: size, then sha256."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise ModelLoadError(f"{path}: metadata.json records no sha256 for it, so it cannot be verified")
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing; restore it or re-export the model")
    size = path.stat().st_size
    if isinstance(record.get("bytes"), int) and size != record["bytes"]:
        raise ModelLoadError(
            f"{path}: has {size} bytes but metadata.json says {record['bytes']}: the file is truncated "
            "or was replaced; restore it or re-export the model"
        )
    actual = sha256_of(path)
    if actual != record["sha256"]:
        raise ModelLoadError(
            f"{path}: sha256 is {actual} but metadata.json says {record['sha256']}: the file is corrupt "
            "or was replaced; restore it or re-export the model"
        )


def locate(model_dir: Path, name: str, backend: Backend, version: str | None = None) -> ModelArtifact:
    """Version `version` of model `name` (the newest when None), with its file for `backend` verified."""
    directory = (
        newest_version(model_dir, name) if version is None else pinned_version(model_dir, name, version)
    )
    metadata = read_metadata(directory)
    filename = metadata.get(FILE_KEYS[backend])
    if not isinstance(filename, str) or not filename:
        raise ModelLoadError(
            f"{directory / 'metadata.json'}: has no {FILE_KEYS[backend]!r}, so there is no file for the "
            f"{backend} backend; re-export the model or choose the other RNNSERVE_BACKEND"
        )
    path = directory / filename
    verify(path, metadata.get("files", {}).get(filename))
    if str(metadata.get("version", directory.name)) != directory.name:
        logger.warning(
            "%s says version %s, but it lies in folder %s: serving it as version %s",
            directory / "metadata.json", metadata.get("version"), directory.name, directory.name,
        )  # fmt: skip
    return ModelArtifact(name=name, version=directory.name, directory=directory, file=path, metadata=metadata)


def model_names(model_dir: Path) -> list[str]:
    """The models in the repository: folders holding at least one version folder, by name."""
    if not model_dir.is_dir():
        return []
    return sorted(
        folder.name
        for folder in model_dir.iterdir()
        if folder.is_dir() and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())
    )
