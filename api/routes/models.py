"""/v1/models: the registry, with each model's workers, readiness and queue depth, and each model
group's group workers with the members they hold."""

from __future__ import annotations

from fastapi import APIRouter

from vlmq.api.deps import FleetDep, RegistryDep
from vlmq.api.errors import ApiError
from vlmq.api.schemas import ErrorBody, GroupView, ModelList, ModelView

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
def list_models(registry: RegistryDep, fleet: FleetDep) -> ModelList:
    fleets = fleet.describe(registry.names)
    groups = fleet.describe_groups(list(registry.groups))
    return ModelList(models=[ModelView.of(spec, fleets[spec.name], registry.group_of(spec.name)) for spec in registry],
                     groups=[GroupView.of(spec, groups[spec.name]) for spec in registry.groups.values()])


@router.get("/{name}", response_model=ModelView, responses={404: {"model": ErrorBody}})
def get_model(name: str, registry: RegistryDep, fleet: FleetDep) -> ModelView:
    if name not in registry:
        raise ApiError(404, "not_found", f"unknown model {name!r}", field="name")
    return ModelView.of(registry.get(name), fleet.describe([name])[name], registry.group_of(name))
