"""Request headers of the job contract: `Prefer: wait=N`, `Idempotency-Key` and `Cancel-After`.

The submit route reads them from the request itself (as FastAPI parameters, their extraction and
validation was 5% of a submit's CPU, benchmarks/submit.py); `SUBMIT_HEADERS` documents them in the
OpenAPI schema (api/openapi.py), and the functions below check them (a 422 naming the header).
"""

from __future__ import annotations

import re

from vlmq.api.errors import ApiError

MAX_WAIT_S = 60
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
#: The submit route's headers, as OpenAPI parameter objects.
SUBMIT_HEADERS = [
    {"name": "prefer", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "wait=N (N ≤ 60): hold the answer until the job ends"},
    {"name": "idempotency-key", "in": "header", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255},
     "description": "Same key + body: same job, 24 h"},
    {"name": "cancel-after", "in": "header", "required": False,
     "schema": {"type": "string", "pattern": _DURATION.pattern},
     "description": "Deadline: 30s, 500ms, 5m, 1h"},
]
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(?P<value>\"[^\"]*\"|[^,;\s]*)", re.IGNORECASE)


def parse_duration(value: str, field: str) -> float:
    """'30', '30s', '500ms', '5m', '1h' -> seconds (positive, at most 7 days)."""
    match = _DURATION.match(value)
    if not match:
        raise ApiError(422, "invalid_request", f"{field}: a duration like 30s, 500ms, 5m or 1h", field=field)
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= 7 * 86_400:
        raise ApiError(422, "invalid_request", f"{field}: between 0 and 7 days", field=field)
    return seconds


def parse_prefer_wait(value: str | None) -> int | None:
    """`Prefer: wait=N` (RFC 7240): N whole seconds, 0 to 60; anything else in a wait preference
    (1e9, 2.5, -1, 61, abc) is a 422. Other preferences are ignored."""
    if not value:
        return None
    match = _WAIT.search(value)
    if not match:
        return None
    raw = match.group("value").strip('"')
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_WAIT_S:
        raise ApiError(422, "invalid_request", f"Prefer: wait must be a whole number of seconds from 0 to {MAX_WAIT_S}",
                       field="Prefer")
    return int(raw) or None
