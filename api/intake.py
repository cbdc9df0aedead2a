"""Reading a submission: the JSON or multipart body, then the image from upload, data URI or URL.

JSON: the job request itself, with `image_url` (an http(s) URL or a `data:image/...;base64,` URI).
Multipart: a `request` part holding the same JSON without `image_url`, and an `image` file part.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from vlmq.api.errors import ApiError
from vlmq.errors import InputError
from vlmq.images import CheckedImage, check_image, decode_data_uri
from vlmq.jobs import JobRequest
from vlmq.jobtypes import JOB_TYPES
from vlmq.safe_http import fetch
from vlmq.settings import Settings

REQUEST_ADAPTER: TypeAdapter = TypeAdapter(JobRequest)
MAX_JSON_FIELD = 1024 * 1024


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return data


def parse_json(raw: bytes | str, field: str) -> Any:
    """A JSON body or part: 400 when it is not JSON (or nests deeper than Python's recursion limit,
    ~1,000 levels; no request of the API nests more than 5), 422 when an object repeats a key
    (which value would count is undefined: RFC 8259 §4)."""
    try:
        return json.loads(raw, object_pairs_hook=_object)
    except _DuplicateKey as exc:
        raise ApiError(422, "invalid_request", f"{field}: the key {exc.args[0]!r} appears twice in one object",
                       field=field) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", f"{field}: JSON nested too deeply", field=field) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{field}: not valid JSON ({exc})", field=field) from exc


def _parse_json(raw: bytes | str, field: str) -> Any:
    data = parse_json(raw, field)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", f"{field}: must be a JSON object", field=field)
    if "type" not in data:
        raise ApiError(422, "invalid_request", f"type: required ({', '.join(JOB_TYPES)})", field="type")
    return data


@asynccontextmanager
async def _form(request: Request) -> AsyncIterator[FormData]:
    """The multipart form; what the parser refuses is the API's 4xx (a part over the size limit: only
    the `request` part has one, the image's is `max_image_bytes`)."""
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_JSON_FIELD)
    except HTTPException as exc:
        if "exceeded maximum size" in str(exc.detail):
            raise ApiError(413, "part_too_large", f"request: larger than {MAX_JSON_FIELD // 1024} KiB",
                           field="request") from None
        raise ApiError(400, "invalid_multipart", f"body: {exc.detail}", field="body") from None
    try:
        yield form
    finally:
        await form.close()


async def read_submission(request: Request, settings: Settings) -> tuple[Any, bytes | None, dict]:
    """The validated job request, the uploaded image for a multipart submit, and the raw JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        data = _parse_json(await request.body(), "body")
        return REQUEST_ADAPTER.validate_python(data), None, data
    if content_type == "multipart/form-data":
        async with _form(request) as form:
            unknown = sorted(set(form) - {"request", "image"})
            if unknown:
                raise ApiError(422, "invalid_request", f"{unknown[0]}: unknown part (send 'request' and 'image')",
                               field=unknown[0])
            raw = form.get("request")
            upload = form.get("image")
            if not isinstance(raw, str):
                raise ApiError(422, "invalid_request", "request: a JSON part named 'request' is required", "request")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "missing_image", "image: a file part named 'image' is required", "image")
            data = _parse_json(raw, "request")
            if data.get("image_url"):
                raise ApiError(422, "invalid_request", "image_url: send either an upload or image_url", "image_url")
            job = REQUEST_ADAPTER.validate_python(data)
            image = await upload.read(settings.max_image_bytes + 1)
            if len(image) > settings.max_image_bytes:
                raise ApiError(413, "image_too_large", f"image: larger than {settings.max_image_bytes} bytes", "image")
            return job, image, data
    raise ApiError(
        415, "unsupported_media_type", "send application/json or multipart/form-data", field="content-type"
    )


async def load_image(image_url: str | None, upload: bytes | None, settings: Settings) -> tuple[CheckedImage, bytes]:
    """The request's image bytes, checked (vlmq/images.py): an upload or a data URI on the event loop,
    a download (seconds, maybe) in a thread."""
    field = "image" if upload is not None else "image_url"
    try:
        if upload is not None:
            data = upload
        elif not image_url:
            raise ApiError(422, "missing_image", "image_url: an image is required (URL, data URI or upload)", field)
        elif image_url.startswith("data:"):
            data = decode_data_uri(image_url, settings.max_image_bytes)
        else:
            data = await run_in_threadpool(
                fetch,
                image_url,
                allow=settings.url_allow_hosts,
                max_bytes=settings.max_image_bytes,
                timeout_s=settings.url_timeout_s,
                max_redirects=settings.url_max_redirects,
            )
        return check_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side), data
    except InputError as exc:
        message = exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        raise ApiError(exc.status, exc.code, message, field=field) from exc
