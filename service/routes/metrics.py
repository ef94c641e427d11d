"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.deps import MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Metrics in the Prometheus text format", response_class=Response)
def metrics(service_metrics: MetricsDep) -> Response:
    # A plain function, run on the framework's thread pool: with several processes, rendering reads every
    # process's files (about 5 ms with the committed models), which would stall the event loop's requests.
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)
