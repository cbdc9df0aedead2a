"""Dependencies, each declared once as an `Annotated` alias; routes take only these.

Each is an `async def`, though none awaits: FastAPI runs a plain `def` dependency in its thread pool,
a thread hop per request (a tenth of a submit's CPU, measured by benchmarks/submit.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from vlmq.api.auth import Caller, identify
from vlmq.api.services import Services
from vlmq.fleet import Fleet
from vlmq.registry import Registry
from vlmq.settings import Settings
from vlmq.store import JobStore


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_store(services: ServicesDep) -> JobStore:
    return services.store


async def get_registry(services: ServicesDep) -> Registry:
    return services.registry


async def get_fleet(services: ServicesDep) -> Fleet:
    return services.fleet


async def get_caller(request: Request, services: ServicesDep) -> Caller:
    return await identify(request, services)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
FleetDep = Annotated[Fleet, Depends(get_fleet)]
CallerDep = Annotated[Caller, Depends(get_caller)]
