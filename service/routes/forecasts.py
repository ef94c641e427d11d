"""POST /forecast: one series or many, of different lengths and horizons."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope

from service.codecs import forecast_items_from_json
from service.forecasting import Forecaster
from service.registry import Registry
from service.routes.common import (
    DirectRoute,
    check_count,
    chosen_model,
    read_body,
    request_timeout_s,
    unless_disconnected,
)
from service.schemas import Forecast, ForecastRequest, Forecasts, openapi_operation


class ForecastSeries(DirectRoute):
    path = "/forecast"
    openapi = openapi_operation(
        "Forecast series, with prediction intervals",
        "One series as `series` with `horizon` (and optional `levels`, default [80, 95]), or many as "
        "`inputs`, each with its own length, horizon and levels.",
        ForecastRequest,
        Forecast | Forecasts,
    )

    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        registry.admit(Forecaster)  # before the body is read: a refusal costs next to nothing
        timeout_s = request_timeout_s(scope)
        items, many, named = forecast_items_from_json(await read_body(receive))
        check_count(len(items), self.settings.max_inputs_per_request)
        forecaster = registry.forecaster(chosen_model(scope, named))
        forecaster.queue.admit()
        queries = forecaster.prepare(items, many)
        answers = await unless_disconnected(receive, forecaster.forecast(queries, timeout_s))
        return {"forecasts": answers} if many else answers[0]
