"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.deps import RegistryDep
from service.responses import JSONBytesResponse

router = APIRouter(prefix="/health", tags=["operations"])


@router.get("/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/ready",
    summary="Every model is loaded, verified and warmed up",
    responses={503: {"description": "Some model is not ready; `models` says why."}},
)
async def ready(registry: RegistryDep, request: Request) -> JSONBytesResponse:
    states = await registry.readiness()
    ready = all(state == "ready" for state in states.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "models": states}
    if request.app.state.drain.draining:
        ready, body["status"] = False, "draining: the service is shutting down"
    return JSONBytesResponse(body, status_code=200 if ready else 503)
