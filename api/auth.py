"""Who is calling: a Bearer API key, or anonymous where the API runs open (loopback by default).

A job belongs to the caller that submitted it; another caller asking for it gets a 404, exactly
as for a job that does not exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import Request

from vlmq.api.errors import ApiError
from vlmq.api.services import Services
from vlmq.jobs import JobRecord
from vlmq.keys import ApiKey
from vlmq.store import ANONYMOUS


@dataclass(frozen=True)
class Caller:
    owner: str  # the key's id, or "anonymous"
    key: ApiKey | None = None


async def identify(request: Request, services: Services) -> Caller:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "invalid_api_key", "Authorization must read 'Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
        key = await services.keys.averify(token.strip())
        if key is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        return Caller(key.id, key)
    if services.settings.auth_open:
        return Caller(ANONYMOUS)
    raise ApiError(401, "missing_api_key", "an API key is required: Authorization: Bearer <key>",
                   headers={"WWW-Authenticate": "Bearer"})


async def spend(caller: Caller, services: Services, cost: int = 1) -> None:
    """The caller's rate limit (a token bucket per key): 429 with Retry-After past it."""
    if caller.key is None:
        return
    allowed, wait_s = await services.keys.atake(caller.key, cost)
    if not allowed:
        raise ApiError(429, "rate_limited", f"rate limit of {caller.key.rate:g}/s exceeded",
                       headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def owned(record: JobRecord | None, caller: Caller, job_id: str) -> JobRecord:
    if record is None or (record.owner or ANONYMOUS) != caller.owner:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired)", field="job_id")
    return record
