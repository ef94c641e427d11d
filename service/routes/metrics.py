"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.deps import MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Metrics in the Prometheus text format", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)
