"""The request codecs on their own: the fast JSON path gives what the pydantic models give, and a
bad body gets the pydantic models' errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from service.codecs import digit_items_from_json, forecast_items_from_json, media_type, pixels_from_octets
from service.errors import InvalidInput
from service.schemas import DigitRequest, ForecastRequest, parse_body

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
def test_digit_bodies_decode_as_the_contract_says(body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    items, many, model = digit_items_from_json(raw)
    expected = parse_body(DigitRequest, raw)
    assert many == (expected.inputs is not None) and model == expected.model
    for item, entry in zip(items, expected.items(), strict=True):
        if entry.pixels is not None:
            assert isinstance(item, np.ndarray) and item.dtype == np.float32
            np.testing.assert_array_equal(item, entry.pixels)
        else:
            assert item == entry.image


@pytest.mark.parametrize(
    "body",
    [
        {"series": [1, 2.5, 3], "horizon": 4},
        {"series": [1, 2.5, 3], "horizon": 4, "levels": [50, 97.5]},
        {
            "inputs": [
                {"series": [1.0] * 20, "horizon": 1},
                {"series": [2.0] * 30, "horizon": 3, "levels": [80]},
            ]
        },
        {"series": [1, 2.5, 3], "horizon": 4, "model": "sine_gru"},
    ],
)
def test_forecast_bodies_decode_as_the_contract_says(body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    items, many, model = forecast_items_from_json(raw)
    expected = parse_body(ForecastRequest, raw)
    assert many == (expected.inputs is not None) and model == expected.model
    for item, entry in zip(items, expected.items(), strict=True):
        np.testing.assert_array_equal(item.series, entry.series)
        assert (item.horizon, item.levels) == (entry.horizon, entry.levels)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"pixels": [1, 2]}',
        b'{"pixels": ' + orjson.dumps(ROWS) + b', "image": "x"}',
        b'{"inputs": [{"pixels": [300]}, {"pixels": "x"}]}',
        b'{"pixels": [true, 1]}',
        b'{"pixels": [1, 2], "model": 3}',
        b'{"image": "x", "model": ""}',
    ],
)
def test_a_bad_digit_body_gets_the_contracts_errors(body: bytes) -> None:
    with pytest.raises(InvalidInput) as fast:
        digit_items_from_json(body)
    with pytest.raises(InvalidInput) as contract:
        parse_body(DigitRequest, body)
    assert (fast.value.message, fast.value.errors) == (contract.value.message, contract.value.errors)


@pytest.mark.parametrize(
    "body",
    [
        b'{"series": [1, 2], "horizon": true}',
        b'{"series": [1, 2], "horizon": 2, "levels": [0.95, 120]}',
        b'{"series": [1, "x"], "horizon": 2}',
        b'{"inputs": [{"series": [1], "horizon": 1}], "horizon": 2}',
    ],
)
def test_a_bad_forecast_body_gets_the_contracts_errors(body: bytes) -> None:
    with pytest.raises(InvalidInput) as fast:
        forecast_items_from_json(body)
    with pytest.raises(InvalidInput) as contract:
        parse_body(ForecastRequest, body)
    assert (fast.value.message, fast.value.errors) == (contract.value.message, contract.value.errors)


def test_octets_are_row_major_uint8_images() -> None:
    images = np.arange(2 * 784, dtype=np.int64).reshape(2, 28, 28) % 256
    decoded = pixels_from_octets(images.astype(np.uint8).tobytes())
    assert decoded.dtype == np.float32 and decoded.shape == (2, 28, 28)
    np.testing.assert_array_equal(decoded, images)


def test_media_types_are_read_without_parameters_or_case() -> None:
    assert media_type("Image/PNG; charset=binary") == "image/png"
    assert media_type("") == ""
