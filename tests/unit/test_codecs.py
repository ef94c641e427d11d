"""The request codecs on their own: the fast JSON path gives what the pydantic models give, and a
bad body gets the pydantic models' errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic_core import PydanticCustomError
from season_model import SEASONAL_MODEL, season_repository

from service import fields
from service.codecs import (
    JsonBody,
    digit_items_from_json,
    forecast_items_from_json,
    media_type,
    pixels_from_octets,
)
from service.config import Settings
from service.errors import InvalidInput
from service.fields import ModelRules, byte_pixels, pixels
from service.loading import locate_for
from service.schemas import DigitRequest, ForecastRequest, parse_body
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster


def task_model(name: str, models_dir: Path) -> Any:
    """A model of the repository with its task's rules (no runtime: the codecs only check inputs)."""
    settings = Settings(model_dir=models_dir)
    task, artifact = locate_for(None, name, settings)
    return task(artifact, settings.batching_for(name))


@pytest.fixture(scope="module")
def classifier() -> DigitClassifier:
    model = task_model("digit_lstm", Path(__file__).resolve().parents[2] / "models")
    assert isinstance(model, DigitClassifier)
    return model


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    model = task_model("sine_gru", Path(__file__).resolve().parents[2] / "models")
    assert isinstance(model, Forecaster)
    return model


@pytest.fixture(scope="module")
def seasonal(tmp_path_factory: pytest.TempPathFactory) -> Forecaster:
    """A forecaster whose graph takes a season length hint (up to 24 steps)."""
    repository = season_repository(
        Path(__file__).resolve().parents[2] / "models", tmp_path_factory.mktemp("s")
    )
    model = task_model(SEASONAL_MODEL, repository)
    assert isinstance(model, Forecaster) and model.max_season == 24
    return model


ROWS = [[(7 * r + c) % 256 for c in range(28)] for r in range(28)]


@pytest.mark.parametrize(
    "body",
    [
        {"pixels": ROWS},
        {"pixels": [v + 0.5 for row in ROWS for v in row][:784]},
        {"image": "aGVsbG8="},
        {"inputs": [{"pixels": ROWS}, {"image": "aGVsbG8="}]},
        {"inputs": [{"pixels": ROWS, "image": None}]},  # an unusual body: pydantic reads it
        {"pixels": ROWS, "model": "digit_gru"},
        {"inputs": [{"pixels": ROWS}], "model": "digit_rnn"},
    ],
)
def test_digit_bodies_decode_as_the_contract_says(body: dict[str, Any], classifier: DigitClassifier) -> None:
    raw = orjson.dumps(body)
    decoded = JsonBody.read(raw)
    items, many = digit_items_from_json(decoded, classifier)
    expected = parse_body(DigitRequest, raw, classifier)
    assert many == (expected.inputs is not None) and decoded.model_name() == expected.model
    for item, entry in zip(items, expected.items(), strict=True):
        if entry.pixels is not None:
            assert isinstance(item, np.ndarray) and item.dtype == np.float32
            np.testing.assert_array_equal(item, entry.pixels)
        else:
            assert item == entry.image


@pytest.mark.parametrize(
    "body",
    [
        {"series": [1, 2.5, 3] * 7, "horizon": 4},
        {"series": [1, 2.5, 3] * 7, "horizon": 4, "levels": [50, 97.5]},
        {
            "inputs": [
                {"series": [1.0] * 20, "horizon": 1},
                {"series": [2.0] * 30, "horizon": 3, "levels": [80]},
            ]
        },
        {"series": [1, 2.5, 3] * 7, "horizon": 4, "model": "sine_gru"},
    ],
)
def test_forecast_bodies_decode_as_the_contract_says(body: dict[str, Any], forecaster: Forecaster) -> None:
    raw = orjson.dumps(body)
    decoded = JsonBody.read(raw)
    items, many = forecast_items_from_json(decoded, forecaster)
    expected = parse_body(ForecastRequest, raw, forecaster)
    assert many == (expected.inputs is not None) and decoded.model_name() == expected.model
    for item, entry in zip(items, expected.items(), strict=True):
        np.testing.assert_array_equal(item.series, entry.series)
        assert (item.horizon, item.levels, item.season) == (entry.horizon, entry.levels, entry.season)


@pytest.mark.parametrize(
    "body",
    [
        {"series": [1, 2.5, 3] * 7, "horizon": 4, "season_length": 3},
        {"series": [1, 2.5, 3] * 7, "horizon": 4},
        {
            "inputs": [
                {"series": [1.0] * 20, "horizon": 1, "season_length": 1},
                {"series": [2.0] * 30, "horizon": 3},
                {"series": [3.0] * 30, "horizon": 3, "season_length": 24, "quantiles": [0.5]},
            ]
        },
    ],
)
def test_season_lengths_decode_as_the_contract_says(body: dict[str, Any], seasonal: Forecaster) -> None:
    raw = orjson.dumps(body)
    items, _ = forecast_items_from_json(JsonBody.read(raw), seasonal)
    expected = parse_body(ForecastRequest, raw, seasonal).items()
    entries = body.get("inputs", [body])
    assert [item.season for item in items] == [e.season for e in expected]
    assert [item.season for item in items] == [entry.get("season_length") for entry in entries]


SEASON_BODIES = [
    (b'{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": 0}', "season_length: is 0"),
    (b'{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": 25}', "to 24 steps"),
    (b'{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": 7.0}', "must be an integer"),
    (b'{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": "7"}', "must be an integer"),
    (b'{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": true}', "must be an integer"),
    (
        b'{"inputs": [{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2, "season_length": -3}]}',
        "inputs[0].season_length: is -3",
    ),
    (
        b'{"inputs": [{"series": [1, 2, 3, 4, 5, 6, 7, 8], "horizon": 2}], "season_length": 2}',
        '"season_length" inside each entry',
    ),
]


@pytest.mark.parametrize(("body", "message"), SEASON_BODIES)
def test_a_bad_season_length_gets_the_contracts_errors(
    body: bytes, message: str, seasonal: Forecaster
) -> None:
    with pytest.raises(InvalidInput) as fast:
        forecast_items_from_json(JsonBody.read(body), seasonal)
    with pytest.raises(InvalidInput) as contract:
        parse_body(ForecastRequest, body, seasonal)
    assert (fast.value.message, fast.value.errors) == (contract.value.message, contract.value.errors)
    assert message in fast.value.message


BAD_BODIES = [
    ("digit", b"{"),
    ("digit", b'{"pixels": [1, 2]}'),
    ("digit", b'{"pixels": ' + orjson.dumps(ROWS) + b', "image": "x"}'),
    ("digit", b'{"inputs": [{"pixels": [300]}, {"pixels": "x"}]}'),
    ("digit", b'{"pixels": [true, 1]}'),
    ("digit", b'{"pixels": [1, 2], "model": 3}'),
    ("digit", b'{"image": "x", "model": ""}'),
    ("forecast", b'{"series": [1, 2], "horizon": true}'),
    ("forecast", b'{"series": [1, 2], "horizon": 2, "levels": [0.95, 120]}'),
    ("forecast", b'{"series": [1, "x"], "horizon": 2}'),
    ("forecast", b'{"inputs": [{"series": [1], "horizon": 1}], "horizon": 2}'),
    ("forecast", b'{"series": ' + orjson.dumps([1.0] * 20) + b', "horizon": 2, "season_length": 12}'),
    ("forecast", b'{"inputs": [{"series": [1], "horizon": 1, "season_length": 12}]}'),
]


@pytest.mark.parametrize(("task", "body"), BAD_BODIES)
def test_a_bad_body_gets_the_contracts_errors(
    task: str, body: bytes, classifier: DigitClassifier, forecaster: Forecaster
) -> None:
    """The fast path gives up on a bad body and pydantic lists exactly what the contract lists."""
    decode: Any
    schema: Any
    model: Any
    decode, schema, model = (
        (digit_items_from_json, DigitRequest, classifier)
        if task == "digit"
        else (forecast_items_from_json, ForecastRequest, forecaster)
    )
    with pytest.raises(InvalidInput) as fast:
        decode(JsonBody.read(body), model)
    with pytest.raises(InvalidInput) as contract:
        parse_body(schema, body, model)
    assert (fast.value.message, fast.value.errors) == (contract.value.message, contract.value.errors)


FLAT = [v for row in ROWS for v in row]
RAGGED = [ROWS[0][:27], ROWS[1] + [5], *ROWS[2:]]  # 784 numbers in all, but not 28 rows of 28


@pytest.mark.parametrize(
    "value",
    [
        ROWS,
        FLAT,
        [[float(v) for v in row] for row in ROWS],
        [[v + 0.5 for v in row] for row in ROWS],
        [[True, *row[1:]] for row in ROWS],  # booleans among numbers: numpy reads them as 0 and 1
        [[bool(v % 2) for v in row] for row in ROWS],
        [[v + 1 for v in row] for row in ROWS],  # 256 in it
        [[-v for v in row] for row in ROWS],
        [[0] * 28 for _ in ROWS],
        [[255 - v for v in row] for row in ROWS],  # dark on light
        RAGGED,
        [*ROWS[:27], [*ROWS[27][:27], [1]]],
        [*FLAT[:783], [1]],
        FLAT[:783],
        [[None if c == 3 else v for c, v in enumerate(row)] for row in ROWS],
        [*ROWS[:27], "a"],
        [],
    ],
)
def test_common_pixels_are_read_as_the_general_path_reads_them(
    value: Any, classifier: DigitClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole numbers 0–255 are read as bytes; every value gets the answer, or the error, that numpy's
    general reading gives it."""

    def read(value: Any) -> Any:
        try:
            return pixels(value, ModelRules(classifier))
        except PydanticCustomError as exc:
            return str(exc)

    common = read(value)
    monkeypatch.setattr(fields, "byte_pixels", lambda value, side: None)
    general = read(value)
    if isinstance(general, str):
        assert common == general
    else:
        assert common.dtype == general.dtype == np.float32 and common.shape == (28, 28)
        np.testing.assert_array_equal(common, general)


def test_whole_numbers_take_the_common_path() -> None:
    for value in (ROWS, FLAT):
        read = byte_pixels(value, 28)
        assert read is not None and read.dtype == np.uint8
        np.testing.assert_array_equal(read, FLAT)
    assert byte_pixels(RAGGED, 28) is None and byte_pixels([[0.5] * 28] * 28, 28) is None


def test_octets_are_row_major_uint8_images(classifier: DigitClassifier) -> None:
    images = np.arange(2 * 784, dtype=np.int64).reshape(2, 28, 28) % 256
    decoded = pixels_from_octets(images.astype(np.uint8).tobytes(), classifier)
    assert decoded.dtype == np.float32 and decoded.shape == (2, 28, 28)
    np.testing.assert_array_equal(decoded, images)


def test_media_types_are_read_without_parameters_or_case() -> None:
    assert media_type("Image/PNG; charset=binary") == "image/png"
    assert media_type("") == ""
