"""The app factory: settings in, a FastAPI app out. Nothing is created at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.config import Settings
from service.drain import Drain
from service.errors import install_error_handlers
from service.lifecycle.start import serving_models
from service.logs import RequestLog
from service.metrics import ServiceMetrics
from service.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.routes import health, metrics, models
from service.routes.common import DirectRoutes
from service.routes.digits import PredictDigit
from service.routes.forecasts import ForecastSeries
from service.routes.openapi import document
from service.security import install_access_control
from service.v2 import repository
from service.v2 import routes as v2
from service.web.docs import install_docs
from service.web.page import install_page


def create_app(settings: Settings | None = None, drain: Drain | None = None) -> FastAPI:
    settings = settings or Settings()
    drain = drain or Drain(settings.drain_s)
    service_metrics = ServiceMetrics(settings.multiprocess_dir)
    request_log = RequestLog(logging.getLogger("service.middleware"))  # the logger's name it always had

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with serving_models(settings, service_metrics) as (registry, repository):
            app.state.served_versions = registry.served_versions  # the API description follows it
            try:
                yield {"registry": registry, "repository": repository}
            finally:
                del app.state.served_versions  # the app may outlive its models
                request_log.flush()

    app = FastAPI(
        title="rnnserve",
        summary="Recurrent models over HTTP, with dynamic batching",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from local assets
        redoc_url=None,
        # The service exports its own Prometheus metrics; FastAPI's OpenTelemetry hooks would cost a
        # look-up of the OpenTelemetry providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.metrics = service_metrics
    app.state.drain = drain
    install_error_handlers(app)
    # The prediction routes, nearly all the traffic, are answered ahead of the framework's routing.
    predictions = [PredictDigit(settings), ForecastSeries(settings), v2.InferTensors(settings)]
    app.add_middleware(DirectRoutes, routes=predictions)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_access_control(app, settings)
    app.add_middleware(
        RequestContextMiddleware, metrics=service_metrics, drain=drain, request_log=request_log
    )
    for routes in (models, health, metrics, v2, repository):
        app.include_router(routes.router)
    document(app, predictions, settings)
    install_docs(app)
    install_page(app)
    return app
