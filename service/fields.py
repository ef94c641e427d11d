"""The REST bodies' fields: JSON values checked by the tasks' rules and turned into numpy arrays.

Each field type (`Pixels`, `Series`, `Horizon`, `SeasonLength`, `Levels`, `Quantiles`) is a pydantic
annotated type whose validator calls the rule of the task that owns it (`service.tasks`) on the model
that will answer, named by the validation context. The fast codecs (`service.codecs`) call the same
validators with `ModelRules` in place of pydantic's context, so a value is judged one way on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Annotated, Any, Protocol, TypeVar

import numpy as np
from pydantic import AfterValidator, Field, PlainValidator, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

from service.tasks.base import ServedModel
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster, levels_problem, quantiles_problem

Task = TypeVar("Task", bound=ServedModel[Any, Any])


def invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is `message` as it is."""
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
        raise invalid(f"must be a JSON list of numbers, not {type(value).__name__}")
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        raise invalid("must be a list of numbers, or of equally long rows of numbers") from None
    if array.size and array.dtype.kind not in "iuf":
        raise invalid(
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


def byte_pixels(value: Any, side: int) -> np.ndarray | None:
    """The common JSON image, side rows of side whole numbers 0–255 (or side² of them), as uint8 read
    at C speed (a `bytearray` of the chained rows: 9 µs for 28×28, where numpy takes 16); None for
    anything else."""
    if not isinstance(value, list):
        return None
    try:
        if len(value) == side and set(map(type, value)) == {list} and set(map(len, value)) == {side}:
            data = bytearray(chain.from_iterable(value))
        elif len(value) == side * side:
            data = bytearray(value)  # any entry not a whole number 0–255 raises
        else:
            return None
    except (TypeError, ValueError):
        return None
    return np.frombuffer(data, dtype=np.uint8)


def pixels(value: Any, info: HasContext) -> np.ndarray:
    """One image as float32 (side, side) from a JSON list of rows of numbers, or of side² numbers."""
    model = _model(info, DigitClassifier)
    common = byte_pixels(value, model.side)
    if common is not None and model.pixels_problem(common) is None:
        return common.reshape(model.side, model.side).astype(np.float32)
    # Any other value, or one with a problem (booleans among them), is read and judged in full.
    array = number_array(value)
    problem = model.pixels_problem(array)
    if problem:
        raise invalid(problem)
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
        raise invalid(f"must be a flat list of numbers; got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise invalid("must hold finite numbers (null for a missing value): found NaN or infinity")
    if missing is not None:
        array[missing] = np.nan
    problem = _model(info, Forecaster).series_problem(array)
    if problem:
        raise invalid(problem)
    return array


def horizon(value: int, info: HasContext) -> int:
    problem = _model(info, Forecaster).horizon_problem(value)
    if problem:
        raise invalid(problem)
    return value


def season_length(value: int, info: HasContext) -> int:
    problem = _model(info, Forecaster).season_problem(value)
    if problem:
        raise invalid(problem)
    return value


def quantiles(value: list[float] | None) -> list[float] | None:
    problem = None if value is None else quantiles_problem(value)
    if problem:
        raise invalid(problem)
    return value


def levels(value: list[float] | None) -> list[float] | None:
    problem = None if value is None else levels_problem(value)
    if problem:
        raise invalid(problem)
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
