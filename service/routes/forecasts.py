"""POST /forecast: one series or many, of different lengths and horizons."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.deps import ForecasterDep, SettingsDep
from service.responses import JSONBytesResponse
from service.routes.common import check_count, unless_disconnected
from service.schemas import (
    ERROR_RESPONSES,
    Forecast,
    ForecastRequest,
    Forecasts,
    openapi_request_body,
    parse_body,
)

router = APIRouter(tags=["predictions"])


@router.post(
    "/forecast",
    summary="Forecast series, with prediction intervals",
    description="One series as `series` with `horizon` (and optional `levels`, default [80, 95]), or "
    "many as `inputs`, each with its own length, horizon and levels.",
    response_model=Forecast | Forecasts,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_request_body(ForecastRequest),
)
async def forecast(request: Request, forecaster: ForecasterDep, settings: SettingsDep) -> JSONBytesResponse:
    body = parse_body(ForecastRequest, await request.body())
    items = body.items()
    check_count(len(items), settings.max_inputs_per_request)
    many = body.inputs is not None
    queries = [
        forecaster.prepare(item.series, item.horizon, item.levels, f"inputs[{i}]." if many else "")
        for i, item in enumerate(items)
    ]
    answers = await unless_disconnected(request, forecaster.forecast(queries))
    return JSONBytesResponse({"forecasts": answers} if many else answers[0])
