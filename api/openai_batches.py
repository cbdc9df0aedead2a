"""OpenAI-style batches (`/openai/v1/batches`): a JSONL file of chat completions run as vlmq jobs in
the bulk lane, and the output and error files they end in.

A batch is a Redis hash (its object's fields and its ingest progress), a list of its jobs ("<job id>
<custom_id>" per accepted line, in the file's order), a list of the lines refused at ingest (or left
unqueued by a cancel or the window's end), and a
tally of its jobs' final statuses that the store's scripts keep (a job's `batch` field). It moves
through OpenAI's statuses:

- `validating`: the input file's lines were checked when it was uploaded (api/openai_files.py); a
  file with malformed lines makes the batch `failed` at once, with OpenAI's `errors` list;
- `in_progress`: the file is read from the blob store a chunk of lines at a time (within a chunk
  jobs are queued concurrently, so not strictly in the file's order), each line becomes a job through the same path as `POST /chat/completions` (api/openai_shapes.py `job_request_of`, then
  the submit path: same checks, cache, admission), in the bulk lane with the key's fair share
  (vlmq/lanes.py) and the batch's `expires_at` as its deadline. A line the API would refuse (a bad
  image, an unknown model) goes to the error file with the status and body the API would answer. A
  full lane (429) is waited out, so a 50,000-line file moves in as the workers make room;
- `finalizing`: every job ended; the output file (succeeded jobs: `response.body` the
  `chat.completion`) and the error file (everything else) are written a page at a time;
- `completed`, or `expired` when the completion window ended first (jobs not started by then are
  aborted by their deadline: `batch_expired` in the error file), or `cancelling` then `cancelled`
  (`POST /batches/{id}/cancel`: ingest stops, queued jobs are canceled, running ones stop at their
  next token; `batch_cancelled` lines for the rest).

Who drives it: every API process runs a `BatchRunner`, which takes a lease (`OAI_LEASE`, renewed
while it works) on each active batch no other process holds. Progress (the byte offset and line
number ingested, after each chunk) is in Redis, and a line's job id is derived from the batch and its
line number, so a batch whose API process died is resumed by another (or the restarted one) at its
last chunk without a duplicate job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from vlmq.api.cancel import cancel
from vlmq.api.errors import ApiError, invalid_request
from vlmq.api.openai_files import BATCH_URL, FileRecord, Files, lines_of, owned_page
from vlmq.api.openai_shapes import ChatCompletionRequest, completion, error_body, failure, job_request_of
from vlmq.api.services import Services
from vlmq.api.submit import Delivery, create_jobs, prepare
from vlmq.blobs import file_name
from vlmq.jobs import CacheOutcome, JobRecord, JobStatus, Lane
from vlmq.keyspace import (
    OAI_ACTIVE,
    OAI_BATCH,
    OAI_BATCH_COUNTS,
    OAI_BATCH_JOBS,
    OAI_BATCH_REFUSED,
    OAI_BATCHES,
    OAI_LEASE,
)
from vlmq.store import aget

log = logging.getLogger("vlmq.openai_batches")
WINDOWS = {"24h": 86_400}
POLL_S = 1.0
#: Lines read, checked and queued together (their images checked, and their jobs queued, concurrently),
#: then recorded.
CHUNK_LINES = 64
FETCH_CONCURRENCY = 8
#: A chunk's lines being queued at once: each is a cache lookup and an admission round trip to Redis,
#: so one at a time would leave the API process waiting on Redis.
SUBMIT_CONCURRENCY = 16
PAGE = 500
FINAL = ("completed", "failed", "expired", "cancelled")
#: The error of a request that never ran: its batch was cancelled, or its completion window ended.
CANCELLED = {"code": "batch_cancelled", "message": "the batch was cancelled before it ran"}
EXPIRED = {"code": "batch_expired", "message": "the batch's completion window ended first"}
_STAMPS = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
           "cancelling_at", "cancelled_at")


def line_job_id(batch_id: str, line: int) -> str:
    """The job id of a batch's `line`-th request line: the same after a resume."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"vlmq-batch:{batch_id}:{line}").hex


@dataclass(frozen=True)
class Batch:
    id: str
    fields: dict[str, str]
    counts: dict[str, int]

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def owner(self) -> str:
        return self.fields["owner"]

    def int(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    @property
    def done(self) -> int:
        """Requests that ended: jobs whose final status is tallied, and lines refused at ingest."""
        return sum(self.counts.values())

    def view(self) -> dict[str, Any]:
        """OpenAI's batch object."""
        f = self.fields
        if self.status in FINAL:
            completed, failed = self.int("completed"), self.int("failed")
        else:
            completed = self.counts.get(JobStatus.succeeded.value, 0)
            failed = self.done - completed
        return {
            "id": self.id, "object": "batch", "endpoint": f["endpoint"], "errors": json.loads(f.get("errors") or "null"),
            "input_file_id": f["input_file_id"], "completion_window": f["completion_window"], "status": self.status,
            "output_file_id": f.get("output_file_id") or None, "error_file_id": f.get("error_file_id") or None,
            "created_at": self.int("created_at"), **{name: self.int(name) or None for name in _STAMPS},
            "request_counts": {"total": self.int("total"), "completed": completed, "failed": failed},
            "metadata": json.loads(f.get("metadata") or "null"),
        }


class Batches:
    """Batch records: create, read, page, cancel (the routes), and the runner's reads and writes."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.redis = services.aredis
        self.ttl_s = services.settings.openai_file_ttl_s

    async def load(self, batch_id: str) -> Batch | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(OAI_BATCH.format(batch_id))
        pipe.hgetall(OAI_BATCH_COUNTS.format(batch_id))
        raw, counts = await pipe.execute()
        if not raw:
            return None
        return Batch(batch_id, {k.decode(): v.decode() for k, v in raw.items()},
                     {k.decode(): int(v) for k, v in counts.items()})

    async def get(self, owner: str, batch_id: str) -> Batch:
        batch = await self.load(batch_id)
        if batch is None or batch.owner != owner:
            raise ApiError(404, "batch_not_found", f"no batch {batch_id!r}", field="batch_id")
        return batch

    async def create(self, owner: str, source: FileRecord, endpoint: str, window: str,
                     metadata: dict[str, str] | None) -> Batch:
        if endpoint != BATCH_URL:
            raise ApiError(400, "invalid_endpoint", f"endpoint: {BATCH_URL} (the one endpoint batches run)",
                           field="endpoint")
        if window not in WINDOWS:
            raise ApiError(400, "invalid_completion_window", "completion_window: 24h", field="completion_window")
        if source.purpose != "batch":
            raise ApiError(400, "invalid_input_file", f"file {source.id!r} has purpose {source.purpose!r}, not "
                           "'batch'", field="input_file_id")
        now = int(time.time())
        batch_id = f"batch_{uuid.uuid4().hex}"
        fields = {"owner": owner, "status": "validating", "endpoint": endpoint, "completion_window": window,
                  "input_file_id": source.id, "created_at": str(now), "expires_at": str(now + WINDOWS[window]),
                  "total": str(source.lines), "offset": "0", "line": "0", "metadata": json.dumps(metadata)}
        if source.error_count:  # OpenAI's validation: a file with malformed lines runs nothing
            fields.update(status="failed", failed_at=str(now), errors=json.dumps({"object": "list",
                                                                                  "data": source.errors}))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(OAI_BATCH.format(batch_id), mapping=fields)
        pipe.expire(OAI_BATCH.format(batch_id), self.ttl_s)
        pipe.zadd(OAI_BATCHES.format(owner), {batch_id: time.time()})
        pipe.expire(OAI_BATCHES.format(owner), self.ttl_s)
        if not source.error_count:
            pipe.sadd(OAI_ACTIVE, batch_id)
        await pipe.execute()
        return Batch(batch_id, fields, {})

    async def request_cancel(self, owner: str, batch_id: str) -> Batch:
        batch = await self.get(owner, batch_id)
        if batch.status in ("validating", "in_progress", "finalizing"):
            await self.redis.hset(OAI_BATCH.format(batch_id),
                                  mapping={"status": "cancelling", "cancelling_at": str(int(time.time()))})
            batch = await self.get(owner, batch_id)
        return batch

    async def page(self, owner: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        return await owned_page(self.redis, OAI_BATCHES.format(owner), after, limit, self.load)

    async def update(self, batch_id: str, **fields: Any) -> None:
        await self.redis.hset(OAI_BATCH.format(batch_id), mapping={k: str(v) for k, v in fields.items()})


# --- the runner -----------------------------------------------------------------------------------


@dataclass
class _Line:
    number: int  # among the file's request lines (blank lines skipped), from 0
    custom_id: str
    request: Any = None
    image: Any = None
    data: bytes = b""
    refusal: tuple[int, dict[str, Any]] | None = None  # (status, OpenAI error body)


class BatchRunner:
    """Drives the batches no other API process holds (see the module's docstring)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.batches = Batches(services)
        self.files = Files(services)
        self.token = uuid.uuid4().hex
        self.driving: dict[str, asyncio.Task] = {}
        self._fetches = asyncio.Semaphore(FETCH_CONCURRENCY)
        self.lease_s = services.settings.openai_batch_lease_s

    async def run(self) -> None:
        while True:
            try:
                for raw in await self.services.aredis.smembers(OAI_ACTIVE):
                    batch_id = raw.decode()
                    if batch_id in self.driving:
                        continue
                    if await self.services.aredis.set(OAI_LEASE.format(batch_id), self.token, nx=True, ex=self.lease_s):
                        self.driving[batch_id] = asyncio.create_task(self._drive(batch_id))
            except (redis.RedisError, OSError) as exc:
                log.warning("batch runner: Redis unavailable: %s", exc)
            await asyncio.sleep(POLL_S)

    async def aclose(self) -> None:
        for task in self.driving.values():
            task.cancel()
        await asyncio.gather(*self.driving.values(), return_exceptions=True)

    async def _drive(self, batch_id: str) -> None:
        keeper = asyncio.create_task(self._keep_lease(batch_id, asyncio.current_task()))
        try:
            await self._advance(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s: driving failed; it is retried", batch_id)
            await asyncio.sleep(POLL_S)
        finally:
            keeper.cancel()
            self.driving.pop(batch_id, None)
            with contextlib.suppress(redis.RedisError, OSError):
                if await self.services.aredis.get(OAI_LEASE.format(batch_id)) == self.token.encode():
                    await self.services.aredis.delete(OAI_LEASE.format(batch_id))

    async def _keep_lease(self, batch_id: str, driver: asyncio.Task | None) -> None:
        key = OAI_LEASE.format(batch_id)
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(redis.RedisError, OSError):
                if await self.services.aredis.get(key) != self.token.encode():
                    if driver is not None:
                        driver.cancel()  # another process holds it now
                    return
                await self.services.aredis.expire(key, self.lease_s)

    async def _advance(self, batch_id: str) -> None:
        while True:
            batch = await self.batches.load(batch_id)
            if batch is None or batch.status in FINAL:
                await self.services.aredis.srem(OAI_ACTIVE, batch_id)
                return
            unread = batch.int("line") < batch.int("total")
            if batch.status == "validating":
                await self.batches.update(batch_id, status="in_progress", in_progress_at=int(time.time()))
            elif batch.status == "in_progress" and unread and time.time() < batch.int("expires_at"):
                await self._ingest(batch)
            elif batch.status == "cancelling":
                await self._cancel_jobs(batch)
                await self._finish(batch_id, "cancelled")
            elif batch.status == "finalizing":  # a process died while writing the files: write them again
                await self._finish(batch_id, batch.fields["ending"])
            elif batch.done >= batch.int("line"):
                expired = unread or batch.counts.get(JobStatus.aborted.value)
                await self._finish(batch_id, "expired" if expired else "completed")
            else:
                await asyncio.sleep(POLL_S)

    # --- in_progress: the file's lines become jobs ------------------------------------------------

    async def _ingest(self, batch: Batch) -> None:
        """Queue lines from the recorded offset until the file ends or the batch is canceled. The first
        chunk may have been queued by a process that died before recording it: its lines' jobs are
        looked up by their derived ids first."""
        offset, number = batch.int("offset"), batch.int("line")
        resumed = True
        pending: list[tuple[int, bytes, int]] = []  # (line number, line, the file offset after it)
        stream = self.services.blobs.astream(file_name(batch.fields["input_file_id"]), offset)
        async for data in lines_of(stream):
            for raw, size in data:
                offset += size
                if raw.strip():
                    pending.append((number, raw, offset))
                    number += 1
                if len(pending) == CHUNK_LINES or (pending and number >= batch.int("total")):
                    if not await self._queue(batch, pending, resumed):
                        return
                    pending, resumed = [], False
        if pending:
            await self._queue(batch, pending, resumed)

    async def _queue(self, batch: Batch, chunk: list[tuple[int, bytes, int]], resumed: bool) -> bool:
        """Check and queue one chunk of lines, then record them; False when the batch was canceled or
        expired meanwhile (a line that was not queued then goes to the error file as never run)."""
        lines = await asyncio.gather(*(self._check(batch, n, raw) for n, raw, _end in chunk))
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def queued(line: _Line) -> JobRecord | None:
            if line.refusal is not None:
                return None
            async with gate:
                try:
                    return await self._submit(batch, line, resumed)
                except ApiError as exc:
                    line.refusal = error_body(exc.status, exc.message, exc.code, exc.field)
                    return None

        records = await asyncio.gather(*(queued(line) for line in lines))
        stopped = any(record is None and line.refusal is None for line, record in zip(lines, records, strict=True))
        never_ran = _never_ran(await self.batches.load(batch.id)) if stopped else None
        jobs, refused, tally = [], [], Counter()
        for line, record in zip(lines, records, strict=True):
            entry: dict[str, Any] = {"line": line.number, "custom_id": line.custom_id}
            if record is not None:
                if record.status.final and record.cache in (CacheOutcome.hit, CacheOutcome.semantic_hit):
                    tally[record.status.value] += 1  # answered from the cache: no script counted it
                jobs.append(f"{record.id} {line.custom_id}")
                continue
            if line.refusal is not None:
                entry["status"], entry["body"] = line.refusal
            else:  # not queued: the batch was canceled or expired meanwhile
                entry["error"] = never_ran
            refused.append(json.dumps(entry))
            tally["refused"] += 1
        _number, _raw, end = chunk[-1]
        await self._record(batch.id, jobs, refused, tally, end, lines[-1].number + 1)
        if stopped:
            return False
        current = await self.batches.load(batch.id)
        return current is not None and current.status == "in_progress" and time.time() < current.int("expires_at")

    async def _record(self, batch_id: str, jobs: list[str], refused: list[str], tally: Counter, offset: int,
                      line: int) -> None:
        """The chunk's jobs, refusals and tally, and the progress after it, in one transaction."""
        pipe = self.services.aredis.pipeline(transaction=True)
        ttl = self.batches.ttl_s
        for key, values in ((OAI_BATCH_JOBS, jobs), (OAI_BATCH_REFUSED, refused)):
            if values:
                pipe.rpush(key.format(batch_id), *values)
                pipe.expire(key.format(batch_id), ttl)
        for status, count in tally.items():
            pipe.hincrby(OAI_BATCH_COUNTS.format(batch_id), status, count)
        pipe.expire(OAI_BATCH_COUNTS.format(batch_id), ttl)
        pipe.hset(OAI_BATCH.format(batch_id), mapping={"offset": str(offset), "line": str(line)})
        await pipe.execute()

    async def _check(self, batch: Batch, number: int, raw: bytes) -> _Line:
        line = json.loads(raw)  # its shape was checked at upload
        checked = _Line(number, line["custom_id"])
        try:
            request = ChatCompletionRequest.model_validate(line["body"])
            if request.stream:
                raise ApiError(400, "invalid_request", "stream: a batch request is not streamed", field="stream")
            checked.request = job_request_of(request, self.services.registry)
            async with self._fetches:
                checked.image, checked.data = await prepare(self.services, checked.request, None)
        except ValidationError as exc:
            error = invalid_request(exc)
            checked.refusal = error_body(error.status, error.message, error.code, error.field)
        except ApiError as exc:
            checked.refusal = error_body(exc.status, exc.message, exc.code, exc.field)
        return checked

    async def _submit(self, batch: Batch, line: _Line, resumed: bool) -> JobRecord | None:
        """Queue one line's job, waiting while its lane is full; None when the batch was canceled (or
        expired) meanwhile. A refusal other than a full lane is raised (an `ApiError`)."""
        job_id = line_job_id(batch.id, line.number)
        if resumed:  # queued before a crash, not yet recorded
            existing = await aget(self.services.aredis, job_id)
            if existing is not None:
                return existing
        delivery = Delivery(owner=batch.owner, lane=Lane.bulk, deadline=float(batch.int("expires_at")),
                            batch=batch.id)
        while True:
            try:
                return (await create_jobs(self.services, line.request, line.image, line.data, delivery,
                                          job_id=job_id)).record
            except ApiError as exc:
                if exc.status != 429:
                    raise
                wait = float((exc.headers or {}).get("Retry-After", 1))
            except (redis.RedisError, OSError) as exc:
                log.warning("batch %s: Redis unavailable, retrying: %s", batch.id, exc)
                wait = 1.0
            await asyncio.sleep(min(wait, 5.0))
            current = await self.batches.load(batch.id)
            if current is None or current.status != "in_progress" or time.time() >= current.int("expires_at"):
                return None

    # --- cancelling, finalizing ---------------------------------------------------------------------

    async def jobs_of(self, batch_id: str) -> AsyncIterator[tuple[str, str, JobRecord | None]]:
        """(job id, custom_id, its record or None) of each accepted line, in the file's order, read a
        page at a time."""
        key = OAI_BATCH_JOBS.format(batch_id)
        for start in range(0, await self.services.aredis.llen(key), PAGE):
            entries = [e.decode().split(" ", 1) for e in await self.services.aredis.lrange(key, start, start + PAGE - 1)]
            records = await asyncio.to_thread(self.services.store.get_many, [job_id for job_id, _ in entries])
            for (job_id, custom_id), record in zip(entries, records, strict=True):
                yield job_id, custom_id, record

    async def _cancel_jobs(self, batch: Batch) -> None:
        """Cancel every job of the batch not yet final, then wait until each has ended."""
        async for _job_id, _custom_id, record in self.jobs_of(batch.id):
            if record is not None and not record.status.final:
                await asyncio.to_thread(cancel, self.services, record, "its batch was cancelled")
        while True:
            current = await self.batches.load(batch.id)
            if current is None or current.done >= current.int("line"):
                return
            await asyncio.sleep(POLL_S)

    async def _finish(self, batch_id: str, status: str) -> None:
        """Write the output and error files, then make the batch final (`status`)."""
        if status == "cancelled":  # a cancelled batch says `cancelling` until it is
            await self.batches.update(batch_id, finalizing_at=int(time.time()))
        else:
            await self.batches.update(batch_id, status="finalizing", ending=status, finalizing_at=int(time.time()))
        batch = await self.batches.load(batch_id)
        if batch is None:
            return
        files = await _ResultFiles.write(self, batch)
        stamp = int(time.time())
        fields: dict[str, Any] = {"status": status, f"{status}_at": stamp, "completed": files.completed,
                                  "failed": files.failed, "output_file_id": files.output_id or "",
                                  "error_file_id": files.error_id or ""}
        pipe = self.services.aredis.pipeline(transaction=True)
        pipe.hset(OAI_BATCH.format(batch_id), mapping={k: str(v) for k, v in fields.items()})
        pipe.srem(OAI_ACTIVE, batch_id)
        await pipe.execute()
        log.info("batch %s %s: %d completed, %d failed", batch_id, status, files.completed, files.failed)


@dataclass
class _ResultFiles:
    completed: int = 0
    failed: int = 0
    output_id: str | None = None
    error_id: str | None = None

    @classmethod
    async def write(cls, runner: BatchRunner, batch: Batch) -> _ResultFiles:
        """The output file (one line per succeeded job) and the error file (every other request line),
        written to temporary files a page at a time, then stored as the batch owner's files."""
        result = cls()
        redis_ = runner.services.aredis
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            out_lines = err_lines = 0
            async for job_id, custom_id, record in runner.jobs_of(batch.id):
                ok, line = _result_line(job_id, custom_id, record)
                (out if ok else err).write(line)
                out_lines, err_lines = out_lines + ok, err_lines + (not ok)
            for raw in await redis_.lrange(OAI_BATCH_REFUSED.format(batch.id), 0, -1):
                refused = json.loads(raw)
                response = None if "error" in refused else {"status_code": refused["status"], "request_id": None,
                                                            "body": refused["body"]}
                err.write(_line(f"batch_req_{batch.id}_{refused['line']}", refused["custom_id"], response,
                                refused.get("error")))
                err_lines += 1
            if batch.int("line") < batch.int("total"):  # canceled or expired before the file was read
                err_lines += await _unread_lines(runner, batch, err)
            result.completed, result.failed = out_lines, err_lines
            result.output_id = await _keep(runner, batch, out, "output", out_lines)
            result.error_id = await _keep(runner, batch, err, "error", err_lines)
        return result


def _line(request_id: str, custom_id: str, response: dict | None, error: dict | None = None) -> bytes:
    return (json.dumps({"id": request_id, "custom_id": custom_id, "response": response, "error": error},
                       separators=(",", ":")) + "\n").encode()


def _result_line(job_id: str, custom_id: str, record: JobRecord | None) -> tuple[bool, bytes]:
    """(succeeded?, the line) of one job in OpenAI's output or error file format."""
    request_id = f"batch_req_{job_id}"
    if record is None:
        return False, _line(request_id, custom_id, None, {"code": "job_expired",
                                                          "message": "the job's record expired (job_ttl_s)"})
    if record.status is JobStatus.succeeded:
        body = completion(record, record.model or "")
        return True, _line(request_id, custom_id, {"status_code": 200, "request_id": job_id, "body": body})
    if record.status is JobStatus.canceled:
        return False, _line(request_id, custom_id, None, CANCELLED)
    if record.status is JobStatus.aborted:
        return False, _line(request_id, custom_id, None, EXPIRED)
    status, message, code = failure(record)
    return False, _line(request_id, custom_id, {"status_code": status, "request_id": job_id,
                                                "body": error_body(status, message, code)[1]})


def _never_ran(batch: Batch | None) -> dict[str, str]:
    """The error of a request line that never became a job: its batch was cancelled, or expired."""
    if batch is None or batch.status == "cancelling":
        return CANCELLED
    return EXPIRED


async def _unread_lines(runner: BatchRunner, batch: Batch, err) -> int:
    error = _never_ran(batch)
    number, count = batch.int("line"), 0
    stream = runner.services.blobs.astream(file_name(batch.fields["input_file_id"]), batch.int("offset"))
    async for lines in lines_of(stream):
        for raw, _size in lines:
            if raw.strip():
                custom_id = json.loads(raw)["custom_id"]
                err.write(_line(f"batch_req_{batch.id}_{number}", custom_id, None, error))
                number, count = number + 1, count + 1
    return count


async def _keep(runner: BatchRunner, batch: Batch, file, kind: str, lines: int) -> str | None:
    if not lines:
        return None
    size = file.tell()
    file.seek(0)
    record = await runner.files.store_file(batch.owner, file, f"{batch.id}_{kind}.jsonl", f"batch_{kind}", size,
                                           lines)
    return record.id

