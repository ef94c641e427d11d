"""The REST JSON contract: request bodies, validated into numpy arrays, and answers (for the API docs).

Field names are fixed: clients rely on them. The shapes of the bodies are this module's; their fields
(pixels, series, horizons, levels, season lengths) are `service.fields`', whose validators call the
tasks' rules (`service.tasks`) with the model that will answer, given as the validation context. A
body that does not validate becomes `InvalidInput` (422) whose message names each field at fault and
says what it should hold.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import InvalidInput
from service.fields import Horizon, Image, Levels, Pixels, Quantiles, SeasonLength, Series, invalid
from service.tasks.base import ServedModel
from service.tasks.forecasts import SeriesInput


def _exactly_one(data: Any, fields: tuple[str, ...], allowed: tuple[str, ...], example: str) -> Any:
    """The check every request body starts with: a JSON object giving exactly one of `fields`."""
    choices = " or ".join(f'"{f}"' for f in fields)
    if not isinstance(data, dict):
        raise invalid(f"must be a JSON object with {choices}, e.g. {example}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise invalid(
            f"unknown field(s) {', '.join(map(repr, unknown))}: this body takes "
            f"{', '.join(map(repr, allowed))}, e.g. {example}"
        )
    given = [f for f in fields if data.get(f) is not None]
    if len(given) != 1:
        found = f"got {' and '.join(given)}" if given else "got none of them"
        raise invalid(f"send exactly one of {choices}; {found}")
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
            raise invalid(
                'with "inputs", give "horizon", "levels", "quantiles" and "season_length" inside each entry'
            )
        if self.series is not None and self.horizon is None:
            raise invalid('"horizon" is required: how many steps to forecast')
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
