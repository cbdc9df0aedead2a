"""Every error leaves the API as JSON: ``{"error": {"code", "message", "field"?, "errors"?}}``.

Bad input is a 4xx naming the field; Redis unreachable is a 503 with Retry-After; anything
unexpected is a 500 with the same shape (and is a bug: tests fail on it).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from vlmq.jobtypes import JOB_TYPES

log = logging.getLogger("vlmq.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.errors = errors


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: tuple | list) -> str:
    # drop the discriminator tag pydantic puts in the path ("caption", "vqa", ...) and "body"
    parts = [str(p) for p in loc if p not in ("body",)]
    if parts and parts[0] in JOB_TYPES:
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        message = err.get("msg", "invalid")
        field = _field(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        elif err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            field = "type" if field == "body" else f"{field}.type"
            tags = (err.get("ctx") or {}).get("expected_tags") or ", ".join(JOB_TYPES)
            message = "must be one of " + str(tags).replace("'", "")
        out.append({"field": field, "message": message})
    return out


def invalid_request(exc: ValidationError | RequestValidationError) -> ApiError:
    """An invalid request as the API's 422: its first error in the message, all of them in `errors`."""
    errors = validation_errors(exc)
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    return ApiError(422, "invalid_request", f"{first['field']}: {first['message']}", field=first["field"],
                    errors=errors)


def validation_response(exc: ValidationError | RequestValidationError) -> JSONResponse:
    error = invalid_request(exc)
    return error_response(error.status, error.code, error.message, field=error.field, errors=error.errors)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "body_too_large", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return error_response(
            503, "unavailable", "the job store is unreachable; try again shortly", headers={"Retry-After": "5"}
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # the client closed its connection while sending its body: nothing was created, and nobody
        # reads this answer (the server drops it); not an error of ours
        log.info("client disconnected while sending %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the request body ended before it was complete")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred; it was logged")
