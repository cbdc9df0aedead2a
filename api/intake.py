"""Reading a submission: the JSON or multipart body, then the image from upload, data URI or URL.

JSON: the job request itself, with `image_url` (an http(s) URL or a `data:image/...;base64,` URI).
Multipart: a `request` part holding the same JSON without `image_url`, and an `image` file part.

A multipart body is parsed as it arrives by `multipart`'s push parser, each part held in memory up to
its own limit: 40 µs for a 120 KB photo, where Starlette's form parser (python-multipart, a temporary
file per upload) took 150 (10% of a photo's submit, benchmarks/submit.py). The OpenAI file upload,
hundreds of megabytes streamed to disk, keeps FastAPI's `File()` form.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from pydantic import TypeAdapter

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


async def _parts(request: Request, boundary: str, settings: Settings) -> dict[str, tuple[bytes, bool]]:
    """The multipart body's parts: name -> (bytes, sent as a file). Only `request` (up to
    `MAX_JSON_FIELD`) and `image` (up to `max_image_bytes`) may come, each once."""
    limits = {"request": MAX_JSON_FIELD, "image": settings.max_image_bytes}
    parts: dict[str, tuple[bytes, bool]] = {}
    chunks: list[bytes] = []
    name, size, is_file = "", 0, False
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=len(limits) + 1) as parser:  # a third: 422
            async for data in request.stream():
                for event in parser.parse(data) if data else ():
                    if isinstance(event, MultipartSegment):
                        name, size, is_file, chunks = event.name, 0, event.filename is not None, []
                        if name not in limits:
                            raise ApiError(422, "invalid_request", f"{name}: unknown part (send 'request' and 'image')",
                                           field=name)
                        if name in parts:
                            raise ApiError(422, "invalid_request", f"{name}: the part is sent twice", field=name)
                    elif event is None:
                        parts[name] = b"".join(chunks), is_file
                    else:
                        size += len(event)
                        if size > limits[name]:
                            raise _too_large(name, limits[name])
                        chunks.append(bytes(event))
    except MultipartError as exc:
        raise ApiError(400, "invalid_multipart", f"body: {exc}", field="body") from None
    return parts


def _too_large(name: str, limit: int) -> ApiError:
    if name == "image":
        return ApiError(413, "image_too_large", f"image: larger than {limit} bytes", "image")
    return ApiError(413, "part_too_large", f"request: larger than {limit // 1024} KiB", field="request")


async def read_submission(request: Request, settings: Settings) -> tuple[Any, bytes | None, dict]:
    """The validated job request, the uploaded image for a multipart submit, and the raw JSON."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type == "application/json":
        data = _parse_json(await request.body(), "body")
        return REQUEST_ADAPTER.validate_python(data), None, data
    if content_type == "multipart/form-data":
        if not options.get("boundary"):
            raise ApiError(400, "invalid_multipart", "body: the content type has no boundary", field="body")
        parts = await _parts(request, options["boundary"], settings)
        if "request" not in parts:
            raise ApiError(422, "invalid_request", "request: a JSON part named 'request' is required", "request")
        image, is_file = parts.get("image", (b"", False))
        if not is_file:
            raise ApiError(422, "missing_image", "image: a file part named 'image' is required", "image")
        data = _parse_json(parts["request"][0], "request")
        if data.get("image_url"):
            raise ApiError(422, "invalid_request", "image_url: send either an upload or image_url", "image_url")
        return REQUEST_ADAPTER.validate_python(data), image, data
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
