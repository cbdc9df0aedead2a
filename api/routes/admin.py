"""/v1/admin: operations on the service itself (an admin key, or the open local mode)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from vlmq.api.answers import bump_generation
from vlmq.api.deps import CallerDep, ServicesDep
from vlmq.api.errors import ApiError
from vlmq.api.schemas import ErrorBody

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class CacheClear(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Only this model's entries (default: every model).")


class CacheCleared(BaseModel):
    models: list[str]
    dropped: int = Field(..., description="Entries dropped by this API process (other replicas drop theirs lazily).")


@router.post("/cache/clear", response_model=CacheCleared, responses={403: {"model": ErrorBody}, 422: {"model": ErrorBody}})
def clear_cache(body: CacheClear, services: ServicesDep, caller: CallerDep) -> CacheCleared:
    """Drop cached answers. Every API replica stops serving them at once (the model's cache
    generation changes); this process also frees their space."""
    if caller.key is not None and not caller.key.admin:
        raise ApiError(403, "forbidden", "an admin key is required (vlmq keys create NAME --admin)")
    if body.model is not None and body.model not in services.registry:
        raise ApiError(422, "unknown_model", f"model: unknown model {body.model!r}", field="model")
    models = [body.model] if body.model else services.registry.names
    for model in models:
        bump_generation(services, model)
    dropped = services.cache.clear(body.model) if services.cache is not None else 0
    return CacheCleared(models=models, dropped=dropped)
