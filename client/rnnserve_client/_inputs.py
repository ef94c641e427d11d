"""The calls' inputs as request bodies, in the cheapest form the service reads. Pure: no network.

One image goes as its file (`image/png`, ...: a PIL image is saved as PNG first) or as JSON `pixels`;
many go as n×784 uint8 bytes (`application/octet-stream`) when every one is a uint8 array, else as JSON
`inputs`. numpy and Pillow are never imported here: an array or an image can only have been made by a
caller who imported them already, so they are looked up in `sys.modules`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import operator
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from rnnserve_client.errors import InputError
from rnnserve_client.types import ForecastInput

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
PIXELS_PER_IMAGE = 28 * 28

DigitImage = str | PathLike[str] | bytes | bytearray | memoryview | Any
"""A file path, an image file's bytes (PNG, JPEG, WebP or BMP), a PIL image, or a numpy array of 28×28
or 784 raw pixel values 0–255, white digit on black."""

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"BM", "image/bmp"),
)


@dataclass(frozen=True)
class Body:
    """A request body, its Content-Type, and whether the service answers it with a list."""

    content: bytes
    content_type: str
    many: bool


def digit_body(image: DigitImage) -> Body:
    """The body for one image."""
    if _is_array(image):
        return _json({"pixels": _pixels(image, "image").tolist()}, many=False)
    content = _image_file(image, "image")
    return Body(content, _image_type(content, "image"), many=False)


def digits_body(images: Iterable[DigitImage] | Any) -> Body:
    """The body for many images, answered in order."""
    if _is_array(images):
        images = _split_array(images)
    elif isinstance(images, str | bytes | bytearray | memoryview | PathLike) or _is_pil_image(images):
        raise InputError("images: pass a list of images to predict_digits; for one image use predict_digit")
    items = list(images)
    if not items:
        raise InputError("images: the list is empty; pass at least one image")
    if all(_is_array(item) and item.dtype.name == "uint8" for item in items):
        pixels = [_pixels(item, f"images[{index}]") for index, item in enumerate(items)]
        return Body(b"".join(p.tobytes() for p in pixels), OCTET_STREAM, many=True)
    entries: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"images[{index}]"
        if _is_array(item):
            entries.append({"pixels": _pixels(item, where).tolist()})
        else:
            content = _image_file(item, where)
            _image_type(content, where)
            entries.append({"image": base64.b64encode(content).decode("ascii")})
    return _json({"inputs": entries}, many=True)


def forecast_body(query: ForecastInput) -> Body:
    return _json(_forecast_entry(query, "series"), many=False)


def forecasts_body(queries: Iterable[ForecastInput], season_length: int | None = None) -> Body:
    """The body for many series; `season_length` goes with each one that gives none of its own."""
    entries = []
    for index, query in enumerate(queries):
        if not isinstance(query, ForecastInput):
            raise InputError(
                f"inputs[{index}]: is a {type(query).__name__}; pass ForecastInput(series, horizon) "
                "objects to forecast_many"
            )
        if query.season_length is None and season_length is not None:
            query = dataclasses.replace(query, season_length=season_length)
        entries.append(_forecast_entry(query, f"inputs[{index}].series"))
    if not entries:
        raise InputError("inputs: the list is empty; pass at least one ForecastInput")
    return _json({"inputs": entries}, many=True)


def _forecast_entry(query: ForecastInput, where: str) -> dict[str, Any]:
    series: Any = query.series
    if _is_array(series):
        if series.ndim != 1:
            raise InputError(f"{where}: an array of shape {series.shape}; pass one flat series of numbers")
        series = series.tolist()
    if isinstance(series, str | bytes) or not isinstance(series, Iterable):
        raise InputError(f"{where}: is a {type(series).__name__}; pass a list of numbers, oldest first")
    try:  # None, or NaN from numpy or pandas, is a missing value: sent as null
        values = [None if v is None or v != v else float(v) for v in series]
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: holds something that is not a number; pass numbers only (None for a missing value)"
        ) from None
    horizon = _whole(query.horizon, "horizon", "a whole number of steps to forecast, e.g. 8")
    entry: dict[str, Any] = {"series": values, "horizon": horizon}
    if query.levels is not None:
        entry["levels"] = _numbers(query.levels, "levels", "percentages, e.g. (80, 95)")
    if query.quantiles is not None:
        entry["quantiles"] = _numbers(query.quantiles, "quantiles", "probabilities, e.g. (0.1, 0.5, 0.9)")
    if query.season_length is not None:
        entry["season_length"] = _whole(
            query.season_length, "season_length", "the season's length in steps, e.g. 12, or None"
        )
    return entry


def _whole(value: Any, field: str, wanted: str) -> int:
    """`horizon` or `season_length`: a whole number (a Python or numpy integer, not a bool)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InputError(f"{field}: is {value!r}; pass {wanted}") from None


def _numbers(values: Sequence[float] | float, field: str, wanted: str) -> list[float]:
    """`levels` or `quantiles`: one number or a sequence of them, as floats."""
    if isinstance(values, int | float):
        return [float(values)]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{field}: is {values!r}; pass {wanted}") from None


def _json(content: dict[str, Any], many: bool) -> Body:
    try:
        text = json.dumps(content, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise InputError(
            "the input holds NaN or infinity: send finite numbers only (None for a missing value)"
        ) from None
    return Body(text.encode(), JSON, many)


def _is_array(value: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _is_pil_image(value: object) -> bool:
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(value, pil_image.Image)


def _pixels(array: Any, where: str) -> Any:
    """The image's 784 raw pixel values, flat, row by row."""
    if array.size != PIXELS_PER_IMAGE or array.ndim not in (1, 2):
        raise InputError(
            f"{where}: an array of shape {array.shape}; an image is 28×28 or 784 raw pixel values "
            "0–255, white digit on black"
        )
    if array.dtype.kind not in "uif":
        raise InputError(f"{where}: an array of {array.dtype}; pass numbers, raw pixel values 0–255")
    return array.reshape(PIXELS_PER_IMAGE)


def _split_array(array: Any) -> list[Any]:
    """A stack of images, (n, 28, 28) or (n, 784), as a list of them."""
    if (array.ndim == 3 and array.shape[1:] == (28, 28)) or (
        array.ndim == 2 and array.shape[1] == PIXELS_PER_IMAGE
    ):
        return list(array)
    raise InputError(
        f"images: an array of shape {array.shape}; pass n images as (n, 28, 28) or (n, 784), "
        "or one image to predict_digit"
    )


def _image_file(image: Any, where: str) -> bytes:
    """The bytes of an image file: read from a path, given as bytes, or a PIL image saved as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | PathLike):
        try:
            return Path(image).read_bytes()
        except OSError as exc:
            raise InputError(
                f"{where}: cannot read the image file {str(image)[:200]!r} ({exc.strerror or exc})"
            ) from None
    if _is_pil_image(image):
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise InputError(
        f"{where}: is a {type(image).__name__}; pass a file path, an image file's bytes (PNG, JPEG, WebP "
        "or BMP), a PIL image, or a numpy array of 28×28 raw pixels 0–255"
    )


def _image_type(content: bytes, where: str) -> str:
    """The Content-Type of an image file, from its first bytes."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    for magic, content_type in _MAGIC:
        if content.startswith(magic):
            return content_type
    raise InputError(
        f"{where}: {len(content):,} bytes that are not a PNG, JPEG, WebP or BMP file; send one of those, "
        "or raw pixels as a numpy array"
    )
