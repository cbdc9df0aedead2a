"""A small Python client of the vlmq API, sync (`Client`) and async (`AsyncClient`).

The CLI and the frontend use it, so no one writes the HTTP calls twice::

    from vlmq.client import Client
    with Client("http://127.0.0.1:8000") as vlmq:
        job = vlmq.submit("photo.jpg", type="caption", model="blip-base")
        job = vlmq.wait(job["id"])
        print(job["output"]["text"])

`image` may be a path, bytes, a PIL image, an http(s) URL or a data URI. Errors from the API
raise `ApiError` carrying the API's own code, message and field.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx

from vlmq.jobs import FINAL_STATUSES, JobStatus

FINAL = {s.value for s in FINAL_STATUSES}
ImageInput = str | Path | bytes | Any  # Any: a PIL image


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    retry_after = response.headers.get("retry-after")
    raise ApiError(
        response.status_code,
        error.get("code", "http_error"),
        error.get("message", response.text[:500]),
        error.get("field"),
        float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
    )


def _image_part(image: ImageInput) -> tuple[dict[str, Any], bytes | None]:
    """(JSON fields, upload bytes): URLs and data URIs go in JSON, everything else is uploaded."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return {"image_url": image}, None
    if isinstance(image, (str, Path)):
        return {}, Path(image).read_bytes()
    if isinstance(image, bytes):
        return {}, image
    if hasattr(image, "save"):  # PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {}, buffer.getvalue()
    raise TypeError(f"unsupported image input: {type(image).__name__}")


def _submit_kwargs(image: ImageInput, fields: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    extra, upload = _image_part(image)
    body = {**fields, **extra}
    if upload is None:
        return {"json": body, "headers": headers}
    return {"data": {"request": json.dumps(body)}, "files": {"image": ("image", upload)}, "headers": headers}


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job: `event` is a status, `text` (a piece of output) or `partial`."""

    id: str | None
    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in FINAL


class _SseParser:
    """Server-Sent Events from lines (the text/event-stream format)."""

    def __init__(self) -> None:
        self.event, self.data, self.id = "message", [], None

    def feed(self, line: str) -> JobEvent | None:
        if line == "":
            if not self.data:
                self.event = "message"
                return None
            event = JobEvent(self.id, self.event, json.loads("\n".join(self.data)))
            self.event, self.data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout


class Client(_Base):
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30) -> None:
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        _raise_for(response)
        return response

    def submit(self, image: ImageInput, *, type: str, headers: dict[str, str] | None = None, **fields: Any) -> dict:
        """Submit one job; returns the job as accepted (status queued, or a cache answer)."""
        kwargs = _submit_kwargs(image, {"type": type, **fields}, headers or {})
        return self._call("POST", "/v1/jobs", **kwargs).json()

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def models(self) -> list[dict]:
        return self._call("GET", "/v1/models").json()["models"]

    def groups(self) -> list[dict]:
        """Model groups, with what each group worker holds."""
        return self._call("GET", "/v1/models").json()["groups"]

    def jobs(self, limit: int = 50) -> list[dict]:
        """The latest jobs, newest first."""
        return self._call("GET", "/v1/jobs", params={"limit": limit}).json()["jobs"]

    def artifact(self, path: str) -> bytes:
        return self._call("GET", path).content

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def batch(self, jobs: list[dict]) -> dict:
        """Submit up to 1,000 jobs (images as URLs or data URIs); per-item errors in the answer."""
        return self._call("POST", "/v1/batches", json={"jobs": jobs}).json()

    def get_batch(self, batch_id: str, offset: int = 0, limit: int = 100) -> dict:
        return self._call("GET", f"/v1/batches/{batch_id}", params={"offset": offset, "limit": limit}).json()

    def clear_cache(self, model: str | None = None) -> dict:
        return self._call("POST", "/v1/admin/cache/clear", json={"model": model}).json()

    def stream(self, job_id: str, last_event_id: str | None = None) -> Iterator[JobEvent]:
        """The job's events as they happen, until its final one (SSE; resumable by event id)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            parser = _SseParser()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return

    def wait(
        self,
        job_id: str,
        timeout: float = 300,
        poll_s: float = 0.2,
        on_update: Callable[[dict], None] | None = None,
    ) -> dict:
        """Poll until the job is final (or `timeout` passes: then the job as it stands)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update:
                on_update(job)
            if job["status"] in FINAL or time.monotonic() > deadline:
                return job
            time.sleep(poll_s)


class AsyncClient(_Base):
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30) -> None:
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        _raise_for(response)
        return response

    async def submit(self, image: ImageInput, *, type: str, headers: dict[str, str] | None = None, **fields: Any) -> dict:
        kwargs = _submit_kwargs(image, {"type": type, **fields}, headers or {})
        return (await self._call("POST", "/v1/jobs", **kwargs)).json()

    async def get(self, job_id: str) -> dict:
        return (await self._call("GET", f"/v1/jobs/{job_id}")).json()

    async def models(self) -> list[dict]:
        return (await self._call("GET", "/v1/models")).json()["models"]

    async def artifact(self, path: str) -> bytes:
        return (await self._call("GET", path)).content

    async def jobs(self, limit: int = 50) -> list[dict]:
        return (await self._call("GET", "/v1/jobs", params={"limit": limit})).json()["jobs"]

    async def cancel(self, job_id: str) -> dict:
        return (await self._call("POST", f"/v1/jobs/{job_id}/cancel")).json()

    async def batch(self, jobs: list[dict]) -> dict:
        return (await self._call("POST", "/v1/batches", json={"jobs": jobs})).json()

    async def get_batch(self, batch_id: str, offset: int = 0, limit: int = 100) -> dict:
        return (await self._call("GET", f"/v1/batches/{batch_id}", params={"offset": offset, "limit": limit})).json()

    async def stream(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[JobEvent]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            parser = _SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event.final:
                        return

    async def wait(self, job_id: str, timeout: float = 300, poll_s: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job["status"] in FINAL or time.monotonic() > deadline:
                return job
            await asyncio.sleep(poll_s)


__all__ = ["FINAL", "ApiError", "AsyncClient", "Client", "JobEvent", "JobStatus"]
