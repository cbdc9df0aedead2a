"""Reading a submission: the JSON or multipart body, then the image from upload, data URI or URL.

JSON: the job request itself, with `image_url` (an http(s) URL or a `data:image/...;base64,` URI).
Multipart: a `request` part holding the same JSON without `image_url`, and an `image` file part.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import TypeAdapter
from starlette.datastructures import UploadFile

from vlmq.api.errors import ApiError
from vlmq.errors import InputError
from vlmq.images import DecodedImage, decode_data_uri, decode_image
from vlmq.jobs import JobRequest
from vlmq.safe_http import fetch
from vlmq.settings import Settings

REQUEST_ADAPTER: TypeAdapter = TypeAdapter(JobRequest)
MAX_JSON_FIELD = 1024 * 1024


def _parse_json(raw: bytes | str, field: str) -> Any:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"{field}: not valid JSON ({exc})", field=field) from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", f"{field}: must be a JSON object", field=field)
    if "type" not in data:
        raise ApiError(
            422, "invalid_request", "type: required (caption, vqa, detect, chat or compare)", field="type"
        )
    return data


async def read_submission(request: Request, settings: Settings) -> tuple[Any, bytes | None, dict]:
    """The validated job request, the uploaded image for a multipart submit, and the raw JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        data = _parse_json(await request.body(), "body")
        return REQUEST_ADAPTER.validate_python(data), None, data
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4, max_part_size=MAX_JSON_FIELD) as form:
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


def load_image(image_url: str | None, upload: bytes | None, settings: Settings) -> tuple[DecodedImage, bytes]:
    """Blocking (a download may take seconds): the routes run it in the thread pool."""
    field = "image" if upload is not None else "image_url"
    try:
        if upload is not None:
            data = upload
        elif not image_url:
            raise ApiError(422, "missing_image", "image_url: an image is required (URL, data URI or upload)", field)
        elif image_url.startswith("data:"):
            data = decode_data_uri(image_url, settings.max_image_bytes)
        else:
            data = fetch(
                image_url,
                allow=settings.url_allow_hosts,
                max_bytes=settings.max_image_bytes,
                timeout_s=settings.url_timeout_s,
                max_redirects=settings.url_max_redirects,
            )
        return decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side), data
    except InputError as exc:
        message = exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        raise ApiError(exc.status, exc.code, message, field=field) from exc
