"""Request bodies to numpy, the fast way, with the JSON contract's own error messages.

The common JSON bodies are decoded with orjson and checked by the same validators that the pydantic
models in `service.schemas` use, without building the models. Anything unusual (a wrong field, a
wrong type, any invalid value) goes through pydantic instead, so a bad body always gets the
contract's full list of errors. Binary bodies, `application/octet-stream` pixels and raw image files,
skip JSON altogether. Pure functions: bytes in, arrays out, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic_core import PydanticCustomError

from service.errors import InvalidInput, UnsupportedMediaType
from service.fields import ModelRules, levels, pixels, quantiles, series
from service.schemas import DigitRequest, ForecastRequest, as_input, parse_body
from service.tasks.base import check
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster, SeriesInput

MAX_MODEL_NAME = 200
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/form-data"

T = TypeVar("T")

DigitItem = np.ndarray | str
"""One digit input: side×side float32 pixels, or the base64 text of an image file still to decode."""


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


def pixels_from_octets(body: bytes, model: DigitClassifier) -> np.ndarray:
    """n×side² uint8 pixels (row-major, white on black) as (n, side, side) float32."""
    size = model.side * model.side
    if not body or len(body) % size:
        raise InvalidInput(
            f"the {OCTET_STREAM} body has {len(body):,} bytes: send n×{size} bytes, each image "
            f"{model.side}×{model.side} uint8 pixels, row-major, white digit on black"
        )
    images = np.frombuffer(body, dtype=np.uint8).reshape(-1, model.side, model.side)
    check(model.image_problems(images, "images"), lambda p: f"images[{p.item}]")
    return images.astype(np.float32)


@dataclass(frozen=True)
class JsonBody:
    """A request body and, when it is valid JSON, what orjson read from it."""

    raw: bytes
    data: Any = None
    valid: bool = False

    @classmethod
    def read(cls, raw: bytes) -> JsonBody:
        try:
            return cls(raw, orjson.loads(raw), True)
        except orjson.JSONDecodeError:
            return cls(raw)

    def model_name(self) -> str | None:
        """The `"model"` the body names, if it names one well; a bad one is left to the validation."""
        name = self.data.get("model") if isinstance(self.data, dict) else None
        return name if type(name) is str and 1 <= len(name) <= MAX_MODEL_NAME else None


Decoded = tuple[list[T], bool]
"""A body's entries, and whether it asked for a list of answers (`inputs`)."""


def _common_items(body: JsonBody, item: Callable[[Any], T]) -> Decoded[T] | None:
    """The fast path: the entries of a body of the common shapes (one entry, or `inputs`, and maybe a
    `model`), each read by `item`; None when pydantic must judge it (and list every problem)."""
    data = body.data
    if not body.valid or not isinstance(data, dict):
        return None
    if "model" in data:
        if body.model_name() is None:
            return None
        data = {key: value for key, value in data.items() if key != "model"}
    try:
        if "inputs" in data:
            if len(data) != 1 or not isinstance(data["inputs"], list) or not data["inputs"]:
                return None
            return [item(entry) for entry in data["inputs"]], True
        return [item(data)], False
    except (_NotCommon, PydanticCustomError):
        return None


def digit_items_from_json(body: JsonBody, model: DigitClassifier) -> Decoded[DigitItem]:
    """The images of a JSON body, checked by `model`'s rules, and whether it asked for a list."""

    def item(data: Any) -> DigitItem:
        if not isinstance(data, dict) or len(data) != 1:
            raise _NotCommon
        if "pixels" in data:
            return pixels(data["pixels"], context)
        if isinstance(data.get("image"), str):
            return str(data["image"])
        raise _NotCommon

    context = ModelRules(model)
    common = _common_items(body, item)
    if common is not None:
        return common
    request = parse_body(DigitRequest, body.raw, model)  # raises the contract's errors
    items: list[DigitItem] = []
    for entry in request.items():
        items.append(entry.pixels if entry.pixels is not None else str(entry.image))
    return items, request.inputs is not None


def forecast_items_from_json(body: JsonBody, model: Forecaster, sent_as: str = "") -> Decoded[SeriesInput]:
    """The series of a JSON body, checked by `model`'s rules, and whether it asked for a list;
    `sent_as`, the body's content type, is named if the body is not JSON."""

    def item(data: Any) -> SeriesInput:
        if not isinstance(data, dict) or not {"series", "horizon"} <= data.keys() <= SERIES_FIELDS:
            raise _NotCommon
        horizon = data["horizon"]
        if type(horizon) is not int or model.horizon_problem(horizon):
            raise _NotCommon
        season = data.get("season_length")
        if season is not None and (type(season) is not int or model.season_problem(season)):
            raise _NotCommon
        wanted = numbers(data.get("levels"), levels), numbers(data.get("quantiles"), quantiles)
        return as_input(series(data["series"], context), horizon, *wanted, season)

    context = ModelRules(model)
    common = _common_items(body, item)
    if common is not None:
        return common
    request = parse_body(ForecastRequest, body.raw, model, sent_as)  # raises the contract's errors
    return request.items(), request.inputs is not None


SERIES_FIELDS = {"series", "horizon", "levels", "quantiles", "season_length"}


def numbers(given: Any, check: Callable[[list[float] | None], list[float] | None]) -> list[float] | None:
    """An optional list of numbers (`levels`, `quantiles`), checked by its validator."""
    if given is None:
        return None
    if not isinstance(given, list) or not all(type(v) in (int, float) for v in given):
        raise _NotCommon
    return check([float(v) for v in given])
