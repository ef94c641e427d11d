"""POST /forecast: one series or many, of different lengths and horizons.

Any Content-Type is read as JSON (curl's default form type included); a body that is not JSON is
answered with the content type it came as.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope

from service.codecs import JsonBody, forecast_items_from_json, media_type
from service.headers import header
from service.registry import Registry
from service.routes.common import (
    DirectRoute,
    check_count,
    chosen_model,
    read_body,
    request_timeout_s,
    rest_place,
    unless_disconnected,
)
from service.routes.openapi import Forecast, Forecasts, openapi_operation
from service.schemas import ForecastRequest
from service.tasks.forecasts import Forecaster


class ForecastSeries(DirectRoute):
    path = "/forecast"
    openapi = openapi_operation(
        "Forecast series, with prediction intervals",
        "One series as `series` with `horizon` (and optional `levels`, default [80, 95], `quantiles`, and "
        "`season_length` for a model whose graph takes a season hint), or many as `inputs`, each with its "
        "own length, horizon, levels and season length. The body is read as JSON whatever its Content-Type.",
        ForecastRequest,
        Forecast | Forecasts,
    )

    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        registry.admit(Forecaster)  # before the body is read: a refusal costs next to nothing
        timeout_s = request_timeout_s(scope)
        body = JsonBody.read(await read_body(receive))
        forecaster = registry.for_task(Forecaster, chosen_model(scope, body.model_name()))
        items, many = forecast_items_from_json(body, forecaster, media_type(header(scope, b"content-type")))
        check_count(len(items), self.settings.max_inputs_per_request)
        forecaster.queue.admit()
        place = rest_place(many)
        queries = forecaster.queries(items)
        answers = await unless_disconnected(receive, forecaster.forecast(queries, place, timeout_s))
        return {"forecasts": answers} if many else answers[0]
