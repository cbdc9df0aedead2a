"""OpenAI-style files (`/openai/v1/files`): a batch's JSONL input, and the output and error files a
batch writes. A file is a blob (vlmq/blobs.py, `files/<id>`) and a Redis hash of its object's fields;
both live `openai_file_ttl_s`, or until deleted.

An upload never sits whole in the API's memory: Starlette spools the multipart part to a temporary
file (1 MiB in memory, then disk); one pass reads it a chunk at a time and checks each line as a
batch request line (a JSON object with `custom_id`, `method: POST`, `url: /v1/chat/completions` and a
`body` object; `custom_id`s unique; at most `openai_batch_max_lines` lines), then the spooled file is
copied into the blob store. What the check found is kept with the file: a batch made from a file with
malformed lines fails its validation (OpenAI's `errors`, with line numbers), as OpenAI's does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from fastapi import UploadFile

from vlmq.api.errors import ApiError
from vlmq.api.services import Services
from vlmq.blobs import CHUNK, adelete_quietly, file_name
from vlmq.keyspace import OAI_FILE, OAI_FILES

T = TypeVar("T")
#: The one endpoint a batch line may name (OpenAI's path, as its SDK and files spell it).
BATCH_URL = "/v1/chat/completions"
#: Line errors kept on a file (OpenAI's batch `errors` list; the count is kept whole).
MAX_LINE_ERRORS = 100


def line_limit(services: Services) -> int:
    """The longest batch line: one request body, as `POST /chat/completions` would take it."""
    return services.settings.max_image_bytes * 4 // 3 + 256 * 1024


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int
    lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def view(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}

    def to_hash(self) -> dict[str, str]:
        return {"owner": self.owner, "purpose": self.purpose, "filename": self.filename, "bytes": str(self.bytes),
                "created_at": str(self.created_at), "expires_at": str(self.expires_at), "lines": str(self.lines),
                "errors": json.dumps(self.errors), "error_count": str(self.error_count)}

    @classmethod
    def from_hash(cls, file_id: str, raw: dict[bytes, bytes]) -> FileRecord:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(id=file_id, owner=data["owner"], purpose=data["purpose"], filename=data["filename"],
                   bytes=int(data["bytes"]), created_at=int(data["created_at"]), expires_at=int(data["expires_at"]),
                   lines=int(data.get("lines", 0)), errors=json.loads(data.get("errors", "[]")),
                   error_count=int(data.get("error_count", 0)))


async def lines_of(stream: AsyncIterator[bytes], max_line_bytes: int | None = None
                   ) -> AsyncIterator[list[tuple[bytes | None, int]]]:
    """The stream's lines, a chunk's worth at a time: (the line without its newline, its size in bytes
    with it). The last line may lack its newline. A line longer than `max_line_bytes` is None, and is
    never held whole: its bytes are dropped as they come."""
    tail, skipped = b"", None  # skipped: the bytes of a too-long line dropped so far
    async for chunk in stream:
        data = tail + chunk
        lines: list[tuple[bytes | None, int]] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            size = end + 1 - start
            if skipped is not None:
                lines.append((None, skipped + size))
                skipped = None
            else:
                too_long = max_line_bytes is not None and size - 1 > max_line_bytes
                lines.append((None if too_long else data[start:end], size))
            start = end + 1
        tail = data[start:]
        if skipped is not None:
            skipped, tail = skipped + len(tail), b""
        elif max_line_bytes is not None and len(tail) > max_line_bytes:
            skipped, tail = len(tail), b""
        if lines:
            yield lines
    if skipped is not None:
        yield [(None, skipped)]
    elif tail:
        yield [(tail, len(tail))]


class LineCheck:
    """Checks batch request lines as they stream past: what OpenAI's batch validation refuses."""

    def __init__(self, max_lines: int, max_line_bytes: int) -> None:
        self.max_lines, self.max_line_bytes = max_lines, max_line_bytes
        self.lines = 0
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self._ids: set[str] = set()
        self._number = 0  # 1-based number of the line being read, blank lines included

    def _error(self, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LINE_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": self._number})

    def close(self) -> None:
        if self.lines == 0 and not self.error_count:
            self._error("empty_file", "the file holds no request line")

    def line(self, raw: bytes | None) -> None:
        """The next line (None: one longer than the limit, see `lines_of`)."""
        self._number += 1
        if raw is None:
            self._error("line_too_long", f"a line holds at most {self.max_line_bytes} bytes")
            return
        if not raw.strip():
            return  # blank lines are skipped, not counted
        self.lines += 1
        if self.lines > self.max_lines:
            if self.lines == self.max_lines + 1:
                self._error("too_many_lines", f"a batch file holds at most {self.max_lines} requests")
            return
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._error("invalid_json_line", "the line is not valid JSON")
            return
        if not isinstance(line, dict):
            self._error("invalid_request", "a line is a JSON object: custom_id, method, url, body")
            return
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            self._error("missing_required_parameter", "custom_id: a string of 1 to 512 characters", "custom_id")
        elif custom_id in self._ids:
            self._error("duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line", "custom_id")
        else:
            self._ids.add(custom_id)
        if line.get("method") != "POST":
            self._error("invalid_method", "method: POST", "method")
        if line.get("url") != BATCH_URL:
            self._error("invalid_url", f"url: {BATCH_URL} (the one endpoint batches run)", "url")
        if not isinstance(line.get("body"), dict):
            self._error("missing_required_parameter", "body: the request, a JSON object", "body")
        if unknown := set(line) - {"custom_id", "method", "url", "body"}:
            self._error("invalid_request", f"{min(unknown)}: unknown field", min(unknown))


async def owned_page(client, index_key: str, after: str | None, limit: int, load: Callable[[str], Awaitable[T | None]],
                     keep: Callable[[T], bool] = lambda _record: True, newest_first: bool = True
                     ) -> tuple[list[T], bool]:
    """One page of an owner's records (files, batches) listed in the sorted set `index_key`: those
    after the id `after` that `keep` accepts, and whether more follow. An id whose record expired
    leaves the index."""
    ids = [i.decode() for i in await client.zrange(index_key, 0, -1, desc=newest_first)]
    if after is not None:
        ids = ids[ids.index(after) + 1:] if after in ids else []
    found: list[T] = []
    for record_id in ids:
        record = await load(record_id)
        if record is None:
            await client.zrem(index_key, record_id)  # expired
        elif keep(record):
            if len(found) == limit:
                return found, True
            found.append(record)
    return found, False


class Files:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.ttl_s = services.settings.openai_file_ttl_s

    async def upload(self, owner: str, upload: UploadFile, purpose: str) -> FileRecord:
        """Store an uploaded batch input file, its lines checked on the way (see the module's docstring)."""
        if purpose != "batch":
            raise ApiError(400, "invalid_purpose", f"purpose {purpose!r}: vlmq keeps batch input files only "
                           "(purpose 'batch')", field="purpose")
        check = LineCheck(self.services.settings.openai_batch_max_lines, line_limit(self.services))

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await upload.read(CHUNK):
                yield chunk

        size = 0
        async for lines in lines_of(chunks(), check.max_line_bytes):
            for raw, line_size in lines:
                size += line_size
                check.line(raw)
        check.close()
        await upload.seek(0)
        return await self.store_file(owner, upload.file, upload.filename or "input.jsonl", "batch", size,
                                     check.lines, check.errors, check.error_count)

    async def store_file(self, owner: str, file: BinaryIO, filename: str, purpose: str, size: int, lines: int,
                         errors: list[dict[str, Any]] | None = None, error_count: int = 0) -> FileRecord:
        """Keep a file: an upload (with what its line check found) or one vlmq wrote (a batch's output or
        errors)."""
        stamp = int(time.time())
        record = FileRecord(id=f"file-{uuid.uuid4().hex}", owner=owner, purpose=purpose, filename=filename[:255],
                            bytes=size, created_at=stamp, expires_at=stamp + self.ttl_s, lines=lines,
                            errors=errors or [], error_count=error_count)
        await self.services.blobs.aput_file(file_name(record.id), file)
        pipe = self.services.aredis.pipeline(transaction=False)
        pipe.hset(OAI_FILE.format(record.id), mapping=record.to_hash())
        pipe.expire(OAI_FILE.format(record.id), self.ttl_s)
        pipe.zadd(OAI_FILES.format(owner), {record.id: time.time()})
        pipe.expire(OAI_FILES.format(owner), self.ttl_s)
        await pipe.execute()
        return record

    async def get(self, owner: str, file_id: str) -> FileRecord:
        """The caller's file (another key's, or none: 404, as OpenAI answers)."""
        raw = await self.services.aredis.hgetall(OAI_FILE.format(file_id))
        record = FileRecord.from_hash(file_id, raw) if raw else None
        if record is None or record.owner != owner:
            raise ApiError(404, "file_not_found", f"no file {file_id!r}", field="file_id")
        return record

    async def content(self, owner: str, file_id: str) -> AsyncIterator[bytes]:
        record = await self.get(owner, file_id)
        return self.services.blobs.astream(file_name(record.id))

    async def delete(self, owner: str, file_id: str) -> None:
        record = await self.get(owner, file_id)
        pipe = self.services.aredis.pipeline(transaction=False)
        pipe.delete(OAI_FILE.format(record.id))
        pipe.zrem(OAI_FILES.format(owner), record.id)
        await pipe.execute()
        await adelete_quietly(self.services.blobs, file_name(record.id))

    async def page(self, owner: str, after: str | None, limit: int, purpose: str | None,
                   newest_first: bool) -> tuple[list[FileRecord], bool]:
        """One page of the caller's files after the file `after`, and whether more follow."""
        async def load(file_id: str) -> FileRecord | None:
            raw = await self.services.aredis.hgetall(OAI_FILE.format(file_id))
            return FileRecord.from_hash(file_id, raw) if raw else None

        return await owned_page(self.services.aredis, OAI_FILES.format(owner), after, limit, load,
                                lambda record: purpose is None or record.purpose == purpose, newest_first)
