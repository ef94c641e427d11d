"""The OpenAPI text of the prediction routes, which read their bodies themselves: their request and
answer schemas, their errors, and the constraints of the models that serve them.

The schema is made once, on first request, from what the repository holds: the names of the models
served (so a generated request names a real one), the lengths and horizons of the default
forecaster, the image side of the default digit model. The prediction routes come first.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel, Field, TypeAdapter

from service.config import Settings
from service.repository import ModelLoadError, model_names, newest_version, pinned_version, read_metadata

if TYPE_CHECKING:
    from service.routes.common import DirectRoute

logger = logging.getLogger(__name__)

# Answers. The routes build them as plain dicts holding float32 arrays; these models document them.


class DigitPrediction(BaseModel):
    digit: int = Field(description="The most probable digit.")
    confidence: float = Field(description="Its probability.")
    probabilities: list[float] = Field(description="Probability of each digit 0–9.")
    model: str
    version: str
    precision: str = Field(description="The precision of the graph that answered: fp32 or int8.")


class DigitPredictions(BaseModel):
    predictions: list[DigitPrediction] = Field(description="One per entry of inputs, in order.")


class Interval(BaseModel):
    lower: list[float]
    upper: list[float]


class Forecast(BaseModel):
    forecast: list[float] = Field(description="The expected next `horizon` values.")
    intervals: dict[str, Interval] = Field(description='Per level, e.g. "80" and "95".')
    quantiles: dict[str, list[float]] | None = Field(
        default=None, description='Per quantile asked for, e.g. "0.1" and "0.9"; only when asked.'
    )
    model: str
    version: str
    precision: str = Field(description="The precision of the graph that answered: fp32 or int8.")


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
    content: dict[str, Any] = {"application/json": {"schema": inline_refs(request.model_json_schema())}}
    content.update(binary or {})
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful Response",
            "content": {"application/json": {"schema": inline_refs(TypeAdapter(answers).json_schema())}},
        }
    }
    for code, text in ERROR_DESCRIPTIONS.items():
        schema = inline_refs(ErrorBody.model_json_schema())
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


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` written out where they are used (OpenAPI documents resolve `$ref`s
    from their own root, not from the schema)."""
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


Catalog = dict[str, list[tuple[str, dict[str, Any]]]]
"""Per task, the models served (the default first) with their metadata."""


def catalog(settings: Settings, versions: dict[str, str] | None = None) -> Catalog:
    """What the service serves, read from the metadata alone (nothing is verified): the models and
    versions it serves now (`versions`), else what it is configured to serve."""
    names = [settings.digit_model, settings.forecast_model]
    names += settings.extra_models(model_names(settings.model_dir))
    if versions is not None:
        names = [name for name in dict.fromkeys([*names, *versions]) if name in versions]
    served: Catalog = {}
    for name in names:
        pinned = versions[name] if versions is not None else settings.model_versions.get(name)
        try:
            folder = (
                pinned_version(settings.model_dir, name, pinned)
                if pinned
                else newest_version(settings.model_dir, name)
            )
            metadata = read_metadata(folder)
        except ModelLoadError:
            continue
        served.setdefault(str(metadata.get("task", "")), []).append((name, metadata))
    return served


def _config(models: list[tuple[str, dict[str, Any]]], key: str, default: int) -> int:
    value = models[0][1].get("config", {}).get(key) if models else None
    return value if isinstance(value, int) else default


def _number_list(low: int, high: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": low, "maxItems": high}


def _bodies(served: Catalog) -> dict[str, dict[str, Any]]:
    """The JSON bodies of the two prediction routes, with the constraints of their default models."""
    digits, forecasts = served.get("digit-classification", []), served.get("forecasting", [])
    side = _config(digits, "image_size", 28)
    pixel = {"type": "number", "minimum": 0, "maximum": 255}
    pixels = {
        "description": f"{side} rows of {side} numbers, or {side * side} numbers: raw pixel values in "
        "0–255, white digit on black (MNIST convention).",
        "anyOf": [
            _number_list(side * side, side * side, pixel),
            _number_list(side, side, _number_list(side, side, pixel)),
        ],
    }
    image = {"type": "string", "minLength": 1, "description": "Base64 of a PNG, JPEG, BMP or WebP file."}
    one_image = [
        {
            "type": "object",
            "properties": {"pixels": pixels},
            "required": ["pixels"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"image": image},
            "required": ["image"],
            "additionalProperties": False,
        },
    ]
    shortest, longest = _config(forecasts, "min_length", 1), _config(forecasts, "max_length", 4096)
    series = {
        **_number_list(shortest, longest, {"type": ["number", "null"]}),
        "description": f"Oldest value first; null for a missing value (at least {shortest} observed).",
    }
    horizon = {"type": "integer", "minimum": 1, "maximum": _config(forecasts, "max_horizon", 128)}
    levels = {
        **_number_list(1, 10, {"type": "number", "minimum": 1, "exclusiveMaximum": 100}),
        "uniqueItems": True,
        "description": "Central prediction-interval levels in percent (default [80, 95]).",
    }
    quantiles = {
        **_number_list(1, 20, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
        "uniqueItems": True,
        "description": "Quantiles to forecast, e.g. [0.1, 0.5, 0.9]; answered as `quantiles`.",
    }
    fields = {"series": series, "horizon": horizon, "levels": levels, "quantiles": quantiles}
    seasonal = {name: _config([(name, metadata)], "max_season", 0) for name, metadata in forecasts}
    seasonal = {name: longest for name, longest in seasonal.items() if longest > 0}
    if seasonal:  # only where a model takes it: the others answer 422
        fields["season_length"] = {
            "type": "integer",
            "minimum": 1,
            "maximum": max(seasonal.values()),
            "description": "The season's length in steps (1: no seasonality); leave it out and the model "
            f"finds the period itself. Taken by {', '.join(seasonal)}, up to their config.max_season; other "
            "forecasters answer 422.",
        }
    one_series = {
        "type": "object",
        "properties": fields,
        "required": ["series", "horizon"],
        "additionalProperties": False,
    }

    def body(task_models: list[tuple[str, dict[str, Any]]], forms: list[dict[str, Any]]) -> dict[str, Any]:
        named = (
            {"model": {"type": "string", "enum": [name for name, _ in task_models]}} if task_models else {}
        )
        alone = [{**form, "properties": {**form["properties"], **named}} for form in forms]
        many = {
            "type": "object",
            "properties": {"inputs": {"type": "array", "items": {"oneOf": forms}, "minItems": 1}, **named},
            "required": ["inputs"],
            "additionalProperties": False,
        }
        return {"oneOf": [*alone, many]}

    return {"/predict/digit": body(digits, one_image), "/forecast": body(forecasts, [one_series])}


def _name_parameters(schema: dict[str, Any], served: Catalog) -> None:
    """Enumerate the served models (and their versions) wherever a path or query names one."""
    everything = [model for models in served.values() for model in models]
    names = [name for name, _ in everything]
    versions = sorted({str(metadata.get("version", "")) for _, metadata in everything} - {""})
    tasks = {"/predict/digit": "digit-classification", "/forecast": "forecasting"}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model_name":
                    parameter["schema"] = {"type": "string", "enum": names}
                elif parameter["name"] == "model_version" and versions:
                    parameter["schema"] = {"type": "string", "enum": versions}
                elif parameter["name"] == "model" and path in tasks:
                    task_names = [name for name, _ in served.get(tasks[path], [])]
                    parameter["schema"] = {"type": "string", "enum": task_names}


def document(app: FastAPI, routes: Sequence[DirectRoute], settings: Settings) -> None:
    """Add the direct routes' operations to the app's OpenAPI schema (and so to /docs), first, with the
    constraints of the models served."""
    framework_schema: Callable[[], dict[str, Any]] = app.openapi
    made_for: list[object] = [None]

    def openapi() -> dict[str, Any]:
        # Made again whenever the models served change (a load, an unload, the poll).
        served_now = getattr(app.state, "served_versions", None)
        versions = served_now() if served_now is not None else None
        if app.openapi_schema is None or made_for[0] != versions:
            app.openapi_schema = None
            made_for[0] = versions
            schema = framework_schema()
            served = catalog(settings, versions)
            direct = {}
            for route in routes:
                for path, operation in {route.path: route.openapi, **route.also_documented}.items():
                    direct[path] = {"post": copy.deepcopy(operation)}
            for path, body in _bodies(served).items():
                direct[path]["post"]["requestBody"]["content"]["application/json"]["schema"] = body
            schema["paths"] = {**direct, **schema["paths"]}
            _name_parameters(schema, served)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
