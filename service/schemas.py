"""The JSON contract: request bodies (validated into numpy arrays) and answers (for the API docs).

Field names are fixed: clients rely on them. A body that does not validate becomes `InvalidInput`
(422) whose message names each field at fault and says what it should hold.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.errors import InvalidInput

IMAGE_SIDE = 28
DEFAULT_LEVELS = (80.0, 95.0)
MAX_LEVELS = 10
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", "{message}", {"message": message})


def _number_array(value: Any) -> np.ndarray:
    """A JSON list (of lists) of finite numbers as an integer or float array, or a clear error."""
    if not isinstance(value, list):
        raise _invalid(f"must be a JSON list of numbers, not {type(value).__name__}")
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        raise _invalid("must be a list of numbers, or of equally long rows of numbers") from None
    if array.size and array.dtype.kind not in "iuf":
        raise _invalid("must hold numbers only: no strings, booleans, nulls or objects")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _invalid("must hold finite numbers: found NaN or infinity")
    return array


def pixels(value: Any) -> np.ndarray:
    """28×28 float32 raw pixel values from a JSON list of 28 rows of 28 numbers, or of 784 numbers."""
    array = _number_array(value)
    if array.shape not in ((IMAGE_SIDE, IMAGE_SIDE), (IMAGE_SIDE * IMAGE_SIDE,)):
        got = f"{len(array)} numbers" if array.ndim == 1 else f"an array of shape {array.shape}"
        raise _invalid(f"must be 28 rows of 28 numbers, or 784 numbers; got {got}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise _invalid(
            f"values must lie in 0–255 (raw values, white digit on black as in MNIST; not "
            f"normalised); found values from {low:g} to {high:g}"
        )
    problem = pixel_problem(low, high)
    if problem:
        raise _invalid(problem)
    return array.reshape(IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)


def pixel_problem(low: float, high: float) -> str | None:
    """What is wrong with an image whose pixels lie in [low, high], if it cannot hold a digit."""
    if low == high:
        return (
            f"the image holds no digit: every pixel is {low:g}; draw the digit in light values "
            "(up to 255) on a black (0) background"
        )
    if high <= 1:
        return (
            f"the pixels look scaled to 0–1 (the largest is {high:g}): send raw 0–255 values, "
            "i.e. multiply by 255"
        )
    return None


def series(value: Any) -> np.ndarray:
    """A 1-D float32 series from a JSON list of numbers that float32 can hold."""
    array = _number_array(value).astype(np.float64)
    if array.ndim != 1:
        raise _invalid(f"must be a flat list of numbers; got an array of shape {array.shape}")
    if array.size and float(np.abs(array).max()) > FLOAT32_MAX:
        raise _invalid(f"values must lie within ±{FLOAT32_MAX:.3g} (float32); rescale the series")
    return array.astype(np.float32)


Pixels = Annotated[
    np.ndarray,
    PlainValidator(pixels),
    WithJsonSchema(
        {
            "description": "28 rows of 28 numbers, or 784 numbers: raw pixel values in 0–255, "
            "white digit on black (MNIST convention).",
            "anyOf": [
                {"type": "array", "items": {"type": "number"}, "minItems": 784, "maxItems": 784},
                {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}, "minItems": 28, "maxItems": 28},
                    "minItems": 28,
                    "maxItems": 28,
                },
            ],
        }
    ),
]
Series = Annotated[
    np.ndarray,
    PlainValidator(series),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number"},
            "description": "Finite numbers, oldest first; the model's metadata sets the allowed length "
            "(16 to 4,096 for sine_gru).",
        }
    ),
]
Image = Annotated[
    str,
    Field(description="Base64 of a PNG, JPEG, BMP or WebP file (a data: URL also works)."),
]
Horizon = Annotated[int, Strict(), Field(description="How many steps to forecast (1 to 128 for sine_gru).")]
Levels = Annotated[
    list[float],
    Field(description="Central prediction-interval levels in percent, each strictly between 0 and 100."),
]


def _exactly_one(data: Any, fields: tuple[str, ...], allowed: tuple[str, ...], example: str) -> Any:
    """The check every request body starts with: a JSON object giving exactly one of `fields`."""
    choices = " or ".join(f'"{f}"' for f in fields)
    if not isinstance(data, dict):
        raise _invalid(f"must be a JSON object with {choices}, e.g. {example}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _invalid(
            f"unknown field(s) {', '.join(map(repr, unknown))}: this body takes "
            f"{', '.join(map(repr, allowed))}, e.g. {example}"
        )
    given = [f for f in fields if data.get(f) is not None]
    if len(given) != 1:
        found = f"got {' and '.join(given)}" if given else "got none of them"
        raise _invalid(f"send exactly one of {choices}; {found}")
    return data


DIGIT_EXAMPLE = '{"pixels": [[0, ...28 values], ...28 rows]} or {"image": "<base64 PNG>"}'
FORECAST_EXAMPLE = '{"series": [1.0, 2.0, ...], "horizon": 32}'


class DigitInput(BaseModel):
    """One image: raw pixels or an image file."""

    model_config = ConfigDict(extra="forbid")

    pixels: Pixels | None = None
    image: Image | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return _exactly_one(data, ("pixels", "image"), ("pixels", "image"), DIGIT_EXAMPLE)


ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="The model to answer, by name (GET /models lists them with their task); "
        "default: the service's model for this task (RNNSERVE_DIGIT_MODEL, RNNSERVE_FORECAST_MODEL).",
    ),
]


class DigitRequest(BaseModel):
    """Body of POST /predict/digit: one image (`pixels` or `image`), or many (`inputs`)."""

    model_config = ConfigDict(extra="forbid")

    pixels: Pixels | None = None
    image: Image | None = None
    inputs: list[DigitInput] | None = Field(default=None, min_length=1)
    model: ModelName | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return _exactly_one(
            data, ("pixels", "image", "inputs"), ("pixels", "image", "inputs", "model"), DIGIT_EXAMPLE
        )

    def items(self) -> list[DigitInput]:
        """The request's images in order, whichever form it used."""
        if self.inputs is not None:
            return self.inputs
        return [DigitInput.model_construct(pixels=self.pixels, image=self.image)]


def check_levels(levels: list[float] | None) -> list[float] | None:
    if levels is None:
        return None
    if not 1 <= len(levels) <= MAX_LEVELS:
        raise _invalid(f"must list 1 to {MAX_LEVELS} percentages; got {len(levels)}")
    for level in levels:
        if not (math.isfinite(level) and 0 < level < 100):
            raise _invalid(f"each level must be a percentage strictly between 0 and 100; got {level:g}")
        if level < 1:
            raise _invalid(f"levels are percentages: send {level * 100:g}, not {level:g}")
    if len({level_key(level) for level in levels}) != len(levels):
        raise _invalid("must not repeat a value")
    return levels


def level_key(level: float) -> str:
    """How a level names its interval in the answer: 80 -> "80", 97.5 -> "97.5"."""
    return str(int(level)) if float(level).is_integer() else repr(float(level))


class ForecastInput(BaseModel):
    """One series to forecast."""

    model_config = ConfigDict(extra="forbid")

    series: Series
    horizon: Horizon
    levels: Levels | None = None

    @field_validator("levels")
    @classmethod
    def _valid_levels(cls, levels: list[float] | None) -> list[float] | None:
        return check_levels(levels)


class ForecastRequest(BaseModel):
    """Body of POST /forecast: one series with its `horizon`, or many (`inputs`)."""

    model_config = ConfigDict(extra="forbid")

    series: Series | None = None
    horizon: Horizon | None = None
    levels: Levels | None = None
    inputs: list[ForecastInput] | None = Field(default=None, min_length=1)
    model: ModelName | None = None

    @field_validator("levels")
    @classmethod
    def _valid_levels(cls, levels: list[float] | None) -> list[float] | None:
        return check_levels(levels)

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return _exactly_one(
            data, ("series", "inputs"), ("series", "horizon", "levels", "inputs", "model"), FORECAST_EXAMPLE
        )

    @model_validator(mode="after")
    def _horizon_beside_series(self) -> ForecastRequest:
        if self.inputs is not None and (self.horizon is not None or self.levels is not None):
            raise _invalid('with "inputs", give "horizon" and "levels" inside each entry of inputs')
        if self.series is not None and self.horizon is None:
            raise _invalid('"horizon" is required: how many steps to forecast')
        return self

    def items(self) -> list[ForecastInput]:
        """The request's series in order, whichever form it used."""
        if self.inputs is not None:
            return self.inputs
        assert self.series is not None and self.horizon is not None
        return [ForecastInput.model_construct(series=self.series, horizon=self.horizon, levels=self.levels)]


# Answers. The routes build them as plain dicts holding float32 arrays; these models document them.


class DigitPrediction(BaseModel):
    digit: int = Field(description="The most probable digit.")
    confidence: float = Field(description="Its probability.")
    probabilities: list[float] = Field(description="Probability of each digit 0–9.")
    model: str
    version: str


class DigitPredictions(BaseModel):
    predictions: list[DigitPrediction] = Field(description="One per entry of inputs, in order.")


class Interval(BaseModel):
    lower: list[float]
    upper: list[float]


class Forecast(BaseModel):
    forecast: list[float] = Field(description="The expected next `horizon` values.")
    intervals: dict[str, Interval] = Field(description='Per level, e.g. "80" and "95".')
    model: str
    version: str


class Forecasts(BaseModel):
    forecasts: list[Forecast] = Field(description="One per entry of inputs, in order.")


class ErrorItem(BaseModel):
    loc: str
    msg: str


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong and how to fix it.")
    errors: list[ErrorItem] | None = None


ERROR_DESCRIPTIONS = {
    413: "The body is larger than RNNSERVE_MAX_BODY_BYTES.",
    415: "The Content-Type is not one this route reads.",
    422: "The input cannot be served as it is; the message says what to fix.",
    429: "The model's queue is full; retry after a second.",
    503: "The model is not loaded, or the service is shutting down.",
    504: "The input waited longer than RNNSERVE_QUEUE_TIMEOUT_S.",
}

_FRIENDLIER = {
    "missing": "is required",
    "extra_forbidden": "is not a field here: remove it",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "too_short": "must not be empty",
}


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as `{"loc": "inputs[2].pixels", "msg": ...}`, in plain words."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", error["msg"])
            errors.append(
                {"loc": "body", "msg": f"the body is not valid JSON ({reason}): send a JSON object"}
            )
            continue
        errors.append({"loc": _location(error["loc"]), "msg": _FRIENDLIER.get(error["type"], error["msg"])})
    return errors


Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], body: bytes) -> Model:
    """Validate a JSON body into `model`, or raise `InvalidInput` listing what to fix."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise InvalidInput.listing(errors) from None


BINARY_IMAGE = {"schema": {"type": "string", "format": "binary"}}


def openapi_operation(
    summary: str,
    description: str,
    request: type[BaseModel],
    answers: Any,
    binary: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI operation of a POST route that reads its body itself: a JSON `request` (and
    `binary` bodies by content type) answered with one of `answers`, or an error."""
    content: dict[str, Any] = {"application/json": {"schema": _inline_refs(request.model_json_schema())}}
    content.update(binary or {})
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful Response",
            "content": {"application/json": {"schema": _inline_refs(TypeAdapter(answers).json_schema())}},
        }
    }
    for code, text in ERROR_DESCRIPTIONS.items():
        schema = _inline_refs(ErrorBody.model_json_schema())
        responses[str(code)] = {"description": text, "content": {"application/json": {"schema": schema}}}
    return {
        "tags": ["predictions"],
        "summary": summary,
        "description": description,
        "parameters": [
            {
                "name": "model",
                "in": "query",
                "required": False,
                "description": 'The model to answer, for any body (a JSON body may name it as "model"); '
                "default: the service's model for this task. GET /models lists them.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ],
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return dict(resolve(schema))
