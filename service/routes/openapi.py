"""The OpenAPI text of the prediction routes, which read their bodies themselves: their request and
answer schemas, their errors, and the constraints of the models that serve them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

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
