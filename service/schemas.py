"""The REST JSON contract: request bodies, validated into numpy arrays, and answers (for the API docs).

Field names are fixed: clients rely on them. The shapes of the bodies are this module's; the rules for
the values (pixels, series, horizons, levels, season lengths) are the tasks' (`service.tasks`), which
the validators call with the model that will answer, given as the validation context. A body that
does not validate becomes `InvalidInput` (422) whose message names each field at fault and says what
it should hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.errors import InvalidInput
from service.tasks.base import ServedModel
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster, SeriesInput, levels_problem, quantiles_problem

Task = TypeVar("Task", bound=ServedModel[Any, Any])


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", "{message}", {"message": message})


JSON_TYPES = {type(None): "null", bool: "a boolean", str: "a string", dict: "an object", list: "a list"}


def _first_non_number(value: list[Any]) -> str:
    """Where the first entry that is not a number stands in a list (of lists), and what it is."""
    for index, entry in enumerate(value):
        if isinstance(entry, list):
            for column, inner in enumerate(entry):
                if type(inner) not in (int, float):
                    return f"{JSON_TYPES.get(type(inner), type(inner).__name__)} at [{index}][{column}]"
        elif type(entry) not in (int, float):
            return f"{JSON_TYPES.get(type(entry), type(entry).__name__)} at [{index}]"
    return "a value that is not a number"


def number_array(value: Any) -> np.ndarray:
    """A JSON list (of lists) of numbers as an integer or float array, or a clear error."""
    if not isinstance(value, list):
        raise _invalid(f"must be a JSON list of numbers, not {type(value).__name__}")
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        raise _invalid("must be a list of numbers, or of equally long rows of numbers") from None
    if array.size and array.dtype.kind not in "iuf":
        raise _invalid(
            "must hold numbers only: no strings, booleans, nulls or objects; "
            f"found {_first_non_number(value)}"
        )
    return array


class HasContext(Protocol):
    """pydantic's `ValidationInfo`, as far as the validators below read it."""

    @property
    def context(self) -> Any: ...


@dataclass(frozen=True)
class ModelRules:
    """Stands in for `ValidationInfo` when the fast path (`service.codecs`) calls a validator itself."""

    model: ServedModel[Any, Any]

    @property
    def context(self) -> dict[str, Any]:
        return {"model": self.model}


def _model(info: HasContext, task: type[Task]) -> Task:
    """The model whose rules judge the values: the validation context names it."""
    model = (info.context or {}).get("model")
    if not isinstance(model, task):
        raise TypeError(f"validating a {task.task} request needs its model in the context")
    return model


def pixels(value: Any, info: HasContext) -> np.ndarray:
    """One image as float32 (side, side) from a JSON list of rows of numbers, or of side² numbers."""
    array = number_array(value)
    model = _model(info, DigitClassifier)
    problem = model.pixels_problem(array)
    if problem:
        raise _invalid(problem)
    return array.reshape(model.side, model.side).astype(np.float32)


def series(value: Any, info: HasContext) -> np.ndarray:
    """A 1-D series from a JSON list of numbers (null for a missing value), as the forecaster's rules
    allow it; a missing value is NaN."""
    missing = None
    if isinstance(value, list) and None in value:
        missing = np.array([entry is None for entry in value])
        value = [0 if entry is None else entry for entry in value]
    array = number_array(value).astype(np.float64)
    if array.ndim != 1:
        raise _invalid(f"must be a flat list of numbers; got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise _invalid("must hold finite numbers (null for a missing value): found NaN or infinity")
    if missing is not None:
        array[missing] = np.nan
    problem = _model(info, Forecaster).series_problem(array)
    if problem:
        raise _invalid(problem)
    return array


def horizon(value: int, info: HasContext) -> int:
    problem = _model(info, Forecaster).horizon_problem(value)
    if problem:
        raise _invalid(problem)
    return value


def season_length(value: int, info: HasContext) -> int:
    problem = _model(info, Forecaster).season_problem(value)
    if problem:
        raise _invalid(problem)
    return value


def quantiles(value: list[float] | None) -> list[float] | None:
    problem = None if value is None else quantiles_problem(value)
    if problem:
        raise _invalid(problem)
    return value


def levels(value: list[float] | None) -> list[float] | None:
    problem = None if value is None else levels_problem(value)
    if problem:
        raise _invalid(problem)
    return value


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
            "(16 to 4,096 for series_gru and sine_gru).",
        }
    ),
]
Image = Annotated[
    str,
    Field(description="Base64 of a PNG, JPEG, BMP or WebP file (a data: URL also works)."),
]
Horizon = Annotated[
    int,
    Strict(),
    AfterValidator(horizon),
    Field(description="How many steps to forecast (1 to 128 for series_gru and sine_gru)."),
]
SeasonLength = Annotated[
    int,
    Strict(),
    AfterValidator(season_length),
    Field(description="The season's length in steps (1: none), for a model whose config has max_season."),
]
Quantiles = Annotated[
    list[float],
    AfterValidator(quantiles),
    Field(
        description="Quantiles to forecast, each a probability strictly between 0 and 1, "
        "e.g. [0.1, 0.5, 0.9]."
    ),
]
Levels = Annotated[
    list[float],
    AfterValidator(levels),
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


class ForecastInput(BaseModel):
    """One series to forecast."""

    model_config = ConfigDict(extra="forbid")

    series: Series
    horizon: Horizon
    levels: Levels | None = None
    quantiles: Quantiles | None = None
    season_length: SeasonLength | None = None


class ForecastRequest(BaseModel):
    """Body of POST /forecast: one series with its `horizon`, or many (`inputs`)."""

    model_config = ConfigDict(extra="forbid")

    series: Series | None = None
    horizon: Horizon | None = None
    levels: Levels | None = None
    quantiles: Quantiles | None = None
    season_length: SeasonLength | None = None
    inputs: list[ForecastInput] | None = Field(default=None, min_length=1)
    model: ModelName | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        return _exactly_one(
            data,
            ("series", "inputs"),
            ("series", "horizon", "levels", "quantiles", "season_length", "inputs", "model"),
            FORECAST_EXAMPLE,
        )

    @model_validator(mode="after")
    def _horizon_beside_series(self) -> ForecastRequest:
        beside = (self.horizon, self.levels, self.quantiles, self.season_length)
        if self.inputs is not None and any(field is not None for field in beside):
            raise _invalid(
                'with "inputs", give "horizon", "levels", "quantiles" and "season_length" inside each entry'
            )
        if self.series is not None and self.horizon is None:
            raise _invalid('"horizon" is required: how many steps to forecast')
        return self

    def items(self) -> list[SeriesInput]:
        """The request's series in order, whichever form it used."""
        if self.inputs is not None:
            return [
                as_input(e.series, e.horizon, e.levels, e.quantiles, e.season_length) for e in self.inputs
            ]
        assert self.series is not None and self.horizon is not None
        return [as_input(self.series, self.horizon, self.levels, self.quantiles, self.season_length)]


def as_input(
    series: np.ndarray,
    horizon: int,
    levels: list[float] | None,
    quantiles: list[float] | None = None,
    season: int | None = None,
) -> SeriesInput:
    return SeriesInput(
        series,
        horizon,
        None if levels is None else tuple(float(v) for v in levels),
        None if quantiles is None else tuple(float(q) for q in quantiles),
        season,
    )


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


def validation_errors(exc: ValidationError, sent_as: str = "") -> list[dict[str, str]]:
    """pydantic's errors as `{"loc": "inputs[2].pixels", "msg": ...}`, in plain words; `sent_as`, the
    body's content type, is named when the body is not JSON."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", error["msg"])
            came = f", and came as {sent_as}" if sent_as and sent_as != "application/json" else ""
            errors.append({
                "loc": "body",
                "msg": f"the body is not valid JSON ({reason}{came}): send a JSON object "
                "(Content-Type application/json)",
            })  # fmt: skip
            continue
        errors.append({"loc": _location(error["loc"]), "msg": _FRIENDLIER.get(error["type"], error["msg"])})
    return errors


Model = TypeVar("Model", bound=BaseModel)


def parse_body(schema: type[Model], body: bytes, model: ServedModel[Any, Any], sent_as: str = "") -> Model:
    """Validate a JSON body into `schema`, by the rules of `model`, or raise `InvalidInput` listing
    what to fix (naming the content type `sent_as` if the body is not JSON)."""
    try:
        return schema.model_validate_json(body, context={"model": model})
    except ValidationError as exc:
        errors = validation_errors(exc, sent_as)
        raise InvalidInput.listing(errors) from None
