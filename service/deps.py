"""Typed access to what the app holds: settings and metrics (made by `create_app`) and the model
registry and the repository calls (made by the lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.lifecycle.manager import Repository
from service.metrics import ServiceMetrics
from service.registry import Registry


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.state.registry
    return registry


async def get_repository(request: Request) -> Repository:
    repository: Repository = request.state.repository
    return repository


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
RepositoryDep = Annotated[Repository, Depends(get_repository)]
