"""Request bodies to numpy, the fast way, with the JSON contract's own error messages.

The common JSON bodies are decoded with orjson and checked by the same validators that the pydantic
models in `service.schemas` use, without building the models. Anything unusual (a wrong field, a
wrong type, any invalid value) goes through pydantic instead, so a bad body always gets the
contract's full list of errors. Binary bodies, `application/octet-stream` pixels and raw image files,
skip JSON altogether. Pure functions: bytes in, arrays out, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic_core import PydanticCustomError

from service.errors import InvalidInput, UnsupportedMediaType
from service.schemas import (
    IMAGE_SIDE,
    DigitRequest,
    ForecastInput,
    ForecastRequest,
    check_levels,
    parse_body,
    pixel_problem,
    pixels,
    series,
)

PIXELS_PER_IMAGE = IMAGE_SIDE * IMAGE_SIDE
MAX_MODEL_NAME = 200
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/form-data"

SERIES_FIELDS = {"series", "horizon", "levels"}
REQUIRED_SERIES_FIELDS = {"series", "horizon"}

T = TypeVar("T")

DigitItem = np.ndarray | str
"""One digit input: 28×28 float32 pixels, or the base64 text of an image file still to decode."""


class _NotCommon(Exception):
    """The body is not of the common shapes: let pydantic judge it."""


def media_type(content_type: str) -> str:
    """`"image/PNG; q=1"` -> `"image/png"`."""
    return content_type.partition(";")[0].strip().lower()


def check_digit_media_type(kind: str) -> None:
    if kind.startswith("image/") and kind not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {kind} is not an image type this service decodes: send "
            f"{', '.join(IMAGE_TYPES)}, {OCTET_STREAM} pixels, or JSON"
        )


def pixels_from_octets(body: bytes) -> np.ndarray:
    """n×784 uint8 pixels (row-major, white on black) as (n, 28, 28) float32."""
    if not body or len(body) % PIXELS_PER_IMAGE:
        raise InvalidInput(
            f"the {OCTET_STREAM} body has {len(body):,} bytes: send n×{PIXELS_PER_IMAGE} bytes, each image "
            "28×28 uint8 pixels, row-major, white digit on black"
        )
    raw = np.frombuffer(body, dtype=np.uint8).reshape(-1, PIXELS_PER_IMAGE)
    lows, highs = raw.min(axis=1), raw.max(axis=1)
    errors = [
        {"loc": f"images[{index}]", "msg": problem}
        for index in np.flatnonzero((lows == highs) | (highs <= 1))
        if (problem := pixel_problem(float(lows[index]), float(highs[index])))
    ]
    if errors:
        raise InvalidInput.listing(errors)
    return raw.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)


Decoded = tuple[list[T], bool, str | None]
"""A body's entries, whether it asked for a list of answers (`inputs`), and the model it names."""


def _common_items(body: bytes, item: Callable[[Any], T]) -> Decoded[T] | None:
    """The fast path: the entries of a body of the common shapes (one entry, or `inputs`, and maybe a
    `model`), each read by `item`; None when pydantic must judge it."""
    try:
        data = orjson.loads(body)
        model = None
        if isinstance(data, dict) and "model" in data:
            model = data.pop("model")
            if type(model) is not str or not 1 <= len(model) <= MAX_MODEL_NAME:
                return None
        if isinstance(data, dict) and "inputs" in data:
            if len(data) != 1 or not isinstance(data["inputs"], list) or not data["inputs"]:
                return None
            return [item(entry) for entry in data["inputs"]], True, model
        return [item(data)], False, model
    except (orjson.JSONDecodeError, _NotCommon, PydanticCustomError):
        return None


def digit_items_from_json(body: bytes) -> Decoded[DigitItem]:
    """The images of a JSON body, whether it asked for a list of answers, and the model it names."""
    common = _common_items(body, _digit_item)
    if common is not None:
        return common
    request = parse_body(DigitRequest, body)  # raises the contract's errors
    items: list[DigitItem] = []
    for entry in request.items():
        items.append(entry.pixels if entry.pixels is not None else str(entry.image))
    return items, request.inputs is not None, request.model


def _digit_item(data: Any) -> DigitItem:
    if not isinstance(data, dict) or len(data) != 1:
        raise _NotCommon
    if "pixels" in data:
        return pixels(data["pixels"])
    if isinstance(data.get("image"), str):
        return str(data["image"])
    raise _NotCommon


def forecast_items_from_json(body: bytes) -> Decoded[ForecastInput]:
    """The series of a JSON body, whether it asked for a list of answers, and the model it names."""
    common = _common_items(body, _forecast_item)
    if common is not None:
        return common
    request = parse_body(ForecastRequest, body)  # raises the contract's errors
    return request.items(), request.inputs is not None, request.model


def _forecast_item(data: Any) -> ForecastInput:
    if not isinstance(data, dict) or not {"series", "horizon"} <= data.keys() <= {
        "series",
        "horizon",
        "levels",
    }:
        raise _NotCommon
    horizon, levels = data["horizon"], data.get("levels")
    if type(horizon) is not int:
        raise _NotCommon
    if levels is not None:
        if not isinstance(levels, list) or not all(type(v) in (int, float) for v in levels):
            raise _NotCommon
        levels = check_levels([float(v) for v in levels])
    return ForecastInput.model_construct(series=series(data["series"]), horizon=horizon, levels=levels)
