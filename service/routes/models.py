"""What is served: versions, training metrics, backend, device, batching."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import RegistryDep, SettingsDep

router = APIRouter(tags=["operations"])


@router.get("/models", summary="The models served, where they run and how they batch")
async def models(registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    return {
        "backend": settings.backend,
        "requested_device": settings.device,
        "models": await registry.describe(),
    }
