"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from vlmq.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers. Nothing else is checked."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis is unreachable."}})
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when Redis (broker and job store) answers."""
    try:
        services.redis.ping()
    except (redis.RedisError, OSError) as exc:
        return JSONResponse({"ready": False, "reason": f"redis: {exc.__class__.__name__}"}, status_code=503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"ready": True})
