"""Settings come from RNNSERVE_* variables, through the one Settings class, validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import BatchingOverride, BatchSettings, Settings, default_model_dir


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("RNNSERVE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.backend, settings.device) == ("onnx", "auto")
    assert settings.max_delay_ms == 0
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert settings.log_format == "text"


def test_the_default_model_directory_is_the_checkouts() -> None:
    assert default_model_dir() == Path(__file__).resolve().parents[2] / "models"
    assert Settings().model_dir == default_model_dir()


def test_variables_with_the_prefix_set_the_fields(clean_environment: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RNNSERVE_PORT": "9000",
        "RNNSERVE_HOST": "0.0.0.0",
        "RNNSERVE_MODEL_DIR": "/srv/models",
        "RNNSERVE_BACKEND": "torchscript",
        "RNNSERVE_DEVICE": "cuda",
        "RNNSERVE_MAX_BATCH_SIZE": "32",
        "RNNSERVE_MAX_DELAY_MS": "1.5",
        "RNNSERVE_LOG_LEVEL": "debug",
        "RNNSERVE_LOG_FORMAT": "json",
        "PORT": "1234",  # no prefix: not ours
    }.items():
        clean_environment.setenv(name, value)
    settings = Settings()
    assert (settings.host, settings.port, settings.model_dir) == ("0.0.0.0", 9000, Path("/srv/models"))
    assert (settings.backend, settings.device) == ("torchscript", "cuda")
    assert (settings.max_batch_size, settings.max_delay_ms) == (32, 1.5)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_per_model_batching_from_json_or_nested_variables(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("RNNSERVE_MAX_BATCH_SIZE", "48")
    clean_environment.setenv("RNNSERVE_MODEL_BATCHING", '{"sine_gru": {"max_delay_ms": 2}}')
    settings = Settings()
    assert settings.batching_for("sine_gru") == BatchSettings(48, 2.0, 1024, 30.0)
    assert settings.batching_for("digit_lstm") == BatchSettings(48, 0.0, 1024, 30.0)

    clean_environment.delenv("RNNSERVE_MODEL_BATCHING")
    clean_environment.setenv("RNNSERVE_MODEL_BATCHING__DIGIT_LSTM__MAX_BATCH_SIZE", "8")
    assert Settings().batching_for("digit_lstm").max_batch_size == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RNNSERVE_BACKEND", "tensorflow"),
        ("RNNSERVE_DEVICE", "tpu"),
        ("RNNSERVE_MAX_BATCH_SIZE", "0"),
        ("RNNSERVE_MAX_DELAY_MS", "-1"),
        ("RNNSERVE_PORT", "70000"),
        ("RNNSERVE_LOG_FORMAT", "xml"),
        ("RNNSERVE_MODEL_BATCHING", '{"sine_gru": {"max_batch": 3}}'),
    ],
)
def test_invalid_values_are_refused(clean_environment: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_environment.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_queue_smaller_than_one_request_is_refused() -> None:
    with pytest.raises(ValidationError, match="a full request could never be queued"):
        Settings(max_queue_size=10, max_inputs_per_request=20)
    with pytest.raises(ValidationError, match=r"model_batching\.sine_gru\.max_queue_size"):
        Settings(model_batching={"sine_gru": BatchingOverride(max_queue_size=4)})
