"""The model repository: the newest version, checked against its metadata before it is served."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from service.repository import ModelLoadError, locate


@pytest.fixture
def repository(tmp_path: Path, models_dir: Path) -> Path:
    """A copy of the committed digit model's newest version, as version 1 and version 3."""
    root = tmp_path / "models"
    committed = max(
        (p for p in (models_dir / "digit_lstm").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    for version in ("1", "3"):
        shutil.copytree(committed, root / "digit_lstm" / version)
    return root


def test_the_highest_integer_version_is_chosen(repository: Path) -> None:
    (repository / "digit_lstm" / "10").mkdir()
    shutil.copytree(repository / "digit_lstm" / "3", repository / "digit_lstm" / "20")
    (repository / "digit_lstm" / "latest").mkdir()
    artifact = locate(repository, "digit_lstm", "onnx")
    assert artifact.version == "20"
    assert artifact.file == repository / "digit_lstm" / "20" / "model.onnx"
    assert locate(repository, "digit_lstm", "torchscript").file.name == "model.pt"


def test_the_files_checksum_is_verified(repository: Path) -> None:
    model = repository / "digit_lstm" / "3" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"3/model.onnx: sha256 is [0-9a-f]{64} but metadata.json says"):
        locate(repository, "digit_lstm", "onnx")
    assert locate(repository, "digit_lstm", "torchscript").version == "3"  # the other file is intact


def test_a_truncated_file_is_named(repository: Path) -> None:
    model = repository / "digit_lstm" / "3" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"model.pt: has 1000 bytes but metadata.json says"):
        locate(repository, "digit_lstm", "torchscript")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.onnx").unlink(), r"3/model.onnx: missing"),
        (lambda d: (d / "metadata.json").unlink(), r"3/metadata.json: missing"),
        (lambda d: (d / "metadata.json").write_text("{not json"), r"metadata.json: unreadable"),
        (lambda d: (d / "metadata.json").write_text("[]"), r"holds list, expected a JSON object"),
    ],
)
def test_missing_or_broken_files_are_named(
    repository: Path, damage: Callable[[Path], object], message: str
) -> None:
    damage(repository / "digit_lstm" / "3")
    with pytest.raises(ModelLoadError, match=message):
        locate(repository, "digit_lstm", "onnx")


def test_metadata_without_a_checksum_is_refused(repository: Path) -> None:
    path = repository / "digit_lstm" / "3" / "metadata.json"
    metadata = json.loads(path.read_text())
    del metadata["files"]["model.onnx"]
    path.write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match="records no sha256"):
        locate(repository, "digit_lstm", "onnx")


def test_missing_models_and_versions_are_named(repository: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"models/sine_gru: no such folder; .*RNNSERVE_MODEL_DIR"):
        locate(repository, "sine_gru", "onnx")
    (repository / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds no version folder"):
        locate(repository, "empty", "onnx")


# --- pinned versions (RNNSERVE_MODEL_VERSIONS) ------------------------------------------------------


def test_a_pinned_version_is_served_instead_of_the_newest(repository: Path) -> None:
    assert locate(repository, "digit_lstm", "onnx").version == "3"
    pinned = locate(repository, "digit_lstm", "onnx", "1")
    assert pinned.version == "1"
    assert pinned.file == repository / "digit_lstm" / "1" / "model.onnx"
    assert locate(repository, "digit_lstm", "torchscript", "3").file.name == "model.pt"


def test_a_pinned_version_that_does_not_exist_names_the_versions_there(repository: Path) -> None:
    (repository / "digit_lstm" / "latest").mkdir()  # not a version: not offered
    with pytest.raises(ModelLoadError, match=r"digit_lstm: has no version '2' .*the versions there are 1, 3"):
        locate(repository, "digit_lstm", "onnx", "2")


def test_a_pinned_version_is_still_verified(repository: Path) -> None:
    (repository / "digit_lstm" / "1" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"1/model.onnx: has 11 bytes"):
        locate(repository, "digit_lstm", "onnx", "1")
    assert locate(repository, "digit_lstm", "onnx").version == "3"  # unpinned: the intact newest


def test_model_versions_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import Settings

    assert Settings().model_versions == {}
    monkeypatch.setenv("RNNSERVE_MODEL_VERSIONS", '{"sine_gru": "1"}')
    assert Settings().model_versions == {"sine_gru": "1"}
