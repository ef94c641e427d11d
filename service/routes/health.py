"""Liveness and readiness."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request

from service.deps import RegistryDep
from service.drain import Drain
from service.registry import Registry
from service.responses import JSONBytesResponse

router = APIRouter(prefix="/health", tags=["operations"])


@dataclass(frozen=True)
class Readiness:
    """Whether the service takes requests: every model ready, and no drain under way."""

    ready: bool
    status: str
    models: dict[str, str]
    """Each model's state: "ready", or why it is not."""


async def readiness(registry: Registry, drain: Drain) -> Readiness:
    """The one answer to "is the service ready?", for /health/ready and the V2 health routes."""
    states = await registry.readiness()
    if drain.draining:
        return Readiness(False, "draining: the service is shutting down", states)
    ready = all(state == "ready" for state in states.values())
    return Readiness(ready, "ready" if ready else "not ready", states)


@router.get("/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/ready",
    summary="Every model is loaded, verified and warmed up",
    responses={503: {"description": "Some model is not ready; `models` says why."}},
)
async def ready(registry: RegistryDep, request: Request) -> JSONBytesResponse:
    state = await readiness(registry, request.app.state.drain)
    body = {"status": state.status, "models": state.models}
    return JSONBytesResponse(body, status_code=200 if state.ready else 503)
