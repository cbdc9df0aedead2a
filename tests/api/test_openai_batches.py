"""The OpenAI Batch API (/openai/v1/files, /openai/v1/batches) driven by the real `openai` package
against the stack's API process: a 200-line round trip with bad lines in the error file, a malformed
file failing validation, cancel of a running batch, keys that cannot see each other's batches; and 32
concurrent streaming chat completions through `AsyncOpenAI`; a batch resumed by a second API process
after the first one died."""

from __future__ import annotations

import asyncio
import io
import json
import time

import openai
import pytest
import redis

from tests.conftest import FULL_MODEL, FULL_QUEUE_LIMIT
from tests.utils.images import astronaut, cat, coffee, data_uri
from tests.utils.processes import start_api
from tests.utils.slow_model import SLOW_MODEL
from vlmq.api.openai_batches import line_job_id
from vlmq.api.openai_files import LineCheck, lines_of
from vlmq.keys import KeyStore
from vlmq.keyspace import JOB, OAI_BATCH_JOBS, OAI_LEASE

PHOTOS = [data_uri(image().resize((48, 48))) for image in (cat, astronaut, coffee)]


def _key(stack, name: str) -> str:
    return KeyStore(redis.Redis.from_url(stack.redis_url)).create(name, rate=1000, burst=1000)[0]


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/openai/v1", api_key=_key(stack, "batch-sdk"), max_retries=0)


def _body(model: str, text: str | None, image: str, **extra) -> dict:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": image}}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _line(custom_id: str, body: dict) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def _upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.3)


def _jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


BAD = {  # custom_id -> (body, the status the API answers it with)
    "bad-image": (_body("blip-base", None, "data:image/png;base64,AAAA"), 400),
    "unknown-model": (_body("no-such-model", None, PHOTOS[0]), 404),
    "two-choices": (_body("blip-base", None, PHOTOS[0], n=2), 400),
    "streamed": (_body("blip-base", None, PHOTOS[0], stream=True), 400),
    "no-image": ({"model": "llava-chat", "messages": [{"role": "user", "content": "hi"}]}, 400),
}


def test_a_200_line_batch_round_trip_reports_its_bad_lines_in_the_error_file(client: openai.OpenAI) -> None:
    good: dict[str, str] = {}  # custom_id -> the model asked
    lines = []
    for i in range(200 - len(BAD)):
        model, text = [("blip-base", None), ("vilt-vqa", "what is it?"), ("llava-chat", f"Describe it in {i % 4} words.")][i % 3]
        body = _body(model, text, PHOTOS[i % 3], max_tokens=4 + i % 5)
        good[f"req-{i}"] = model
        lines.append(_line(f"req-{i}", body))
    for custom_id, (body, _status) in BAD.items():
        lines.insert(len(lines) // 2, _line(custom_id, body))
    source = _upload(client, lines)
    assert client.files.retrieve(source).purpose == "batch"

    batch = client.batches.create(input_file_id=source, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "round-trip"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"run": "round-trip"}
    done = _wait(client, batch.id, ("completed", "failed", "expired", "cancelled"))
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (200, 195, 5)
    assert done.completed_at and done.in_progress_at and done.finalizing_at

    output = _jsonl(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(good)
    for line in output:
        response = line["response"]
        assert line["error"] is None and response["status_code"] == 200
        completion = response["body"]
        assert completion["object"] == "chat.completion" and completion["model"] == good[line["custom_id"]]
        assert isinstance(completion["choices"][0]["message"]["content"], str)
    errors = {line["custom_id"]: line for line in _jsonl(client, done.error_file_id)}
    assert set(errors) == set(BAD)
    for custom_id, (_body_, status) in BAD.items():
        response = errors[custom_id]["response"]
        assert response["status_code"] == status, errors[custom_id]
        assert set(response["body"]["error"]) == {"message", "type", "param", "code"}
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert done.id in {b.id for b in client.batches.list(limit=100)}


def test_a_file_with_malformed_lines_fails_validation_with_their_line_numbers(client: openai.OpenAI) -> None:
    lines = [_line("a", _body("blip-base", None, PHOTOS[0])), "not json",
             json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}),
             json.dumps({"custom_id": "c", "method": "GET", "url": "/v1/embeddings", "body": {}})]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    found = {(e.line, e.code) for e in batch.errors.data}
    assert found == {(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_method"), (4, "invalid_url")}
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(input_file_id=_upload(client, lines[:1]), endpoint="/v1/chat/completions",
                              completion_window="1h")
    assert window.value.body["param"] == "completion_window"


def test_cancel_stops_a_running_batch_and_accounts_for_every_line(client: openai.OpenAI) -> None:
    lines = [_line(f"slow-{i}", _body(SLOW_MODEL, f"photo {i}", PHOTOS[i % 3], max_tokens=200)) for i in range(12)]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    _wait(client, batch.id, ("in_progress",), 60)
    time.sleep(1.0)  # its first jobs are running
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = _wait(client, batch.id, ("cancelled",), 120)
    assert done.cancelled_at and done.request_counts.total == 12
    output, errors = _jsonl(client, done.output_file_id), _jsonl(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(f"slow-{i}" for i in range(12))
    assert len(output) < 12 and any(line["error"] and line["error"]["code"] == "batch_cancelled" for line in errors)


def test_another_key_sees_neither_the_batch_nor_its_files(client: openai.OpenAI, stack) -> None:
    source = _upload(client, [_line("x", _body("blip-base", None, PHOTOS[1], max_tokens=3))])
    batch = client.batches.create(input_file_id=source, endpoint="/v1/chat/completions", completion_window="24h")
    other = openai.OpenAI(base_url=str(client.base_url), api_key=_key(stack, "batch-other"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(source)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=source, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id not in {b.id for b in other.batches.list()} and source not in {f.id for f in other.files.list()}
    assert _wait(client, batch.id, ("completed",)).request_counts.completed == 1
    client.files.delete(source)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(source)


def test_32_concurrent_streams_through_async_openai_each_get_their_answer(stack, client: openai.OpenAI) -> None:
    async def go() -> list[tuple[str, str]]:
        aclient = openai.AsyncOpenAI(base_url=str(client.base_url), api_key=client.api_key, max_retries=0)

        async def one(i: int) -> tuple[str, str]:
            stream = await aclient.chat.completions.create(
                stream=True, stream_options={"include_usage": True},
                **_body("llava-chat", f"Say {i}.", PHOTOS[i % 3], max_tokens=6, seed=i, temperature=0))
            pieces, job, used = [], None, None
            async for chunk in stream:
                job = chunk.id.removeprefix("chatcmpl-")
                pieces += [c.delta.content or "" for c in chunk.choices]
                used = chunk.usage or used
            assert used is not None and used.completion_tokens >= 1
            return job, "".join(pieces)

        try:
            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await aclient.close()

    answers = asyncio.run(go())
    assert len(answers) == 32
    with stack.client() as http:
        for job_id, text in answers:
            job = http.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {client.api_key}"}).json()
            assert job["status"] == "succeeded" and job["output"]["text"] == text


def test_a_batch_whose_api_process_died_is_resumed_by_another_without_a_duplicate_job(
        base_env: dict[str, str], log_dir, redis_url: str) -> None:
    """Two API processes of their own, on a database of their own (the stack's API would drive the batch
    too). The model has no worker and room for 2 queued jobs: the first process queues two of the
    chunk's lines, then waits for room for the others, and is killed before it recorded the chunk. The second takes the lease over,
    finds those two jobs by their derived ids instead of queuing them again, and, once canceled,
    accounts for every line exactly once."""
    base, _, db = redis_url.rpartition("/")
    url = f"{base}/{(int(db) + 8) % 16}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {**base_env, "VLMQ_REDIS_URL": url, "VLMQ_OPENAI_BATCH_LEASE_S": "2"}
    key = KeyStore(client).create("resume", rate=1000, burst=1000)[0]
    first, first_url = start_api(env, log_dir)
    second = None
    try:
        sdk = openai.OpenAI(base_url=f"{first_url}/openai/v1", api_key=key, max_retries=0)
        lines = [_line(f"r-{i}", _body(FULL_MODEL, f"photo {i}", PHOTOS[i % 3])) for i in range(10)]
        batch = sdk.batches.create(input_file_id=_upload(sdk, lines), endpoint="/v1/chat/completions",
                                   completion_window="24h")
        line_jobs = [JOB.format(line_job_id(batch.id, n)) for n in range(10)]  # queued concurrently: any two
        deadline = time.monotonic() + 30
        while client.exists(*line_jobs) < FULL_QUEUE_LIMIT:
            assert time.monotonic() < deadline, "the first API process queued nothing"
            time.sleep(0.1)
        first.kill9()
        assert client.llen(OAI_BATCH_JOBS.format(batch.id)) == 0  # queued, not yet recorded
        second, second_url = start_api(env, log_dir)
        sdk = openai.OpenAI(base_url=f"{second_url}/openai/v1", api_key=key, max_retries=0)
        time.sleep(2.5)  # the dead process's lease expires
        deadline = time.monotonic() + 30
        while client.get(OAI_LEASE.format(batch.id)) is None:
            assert time.monotonic() < deadline, "the second API process did not take the batch over"
            time.sleep(0.1)
        time.sleep(1.0)  # it found the two queued lines, and waits for room for the others
        sdk.batches.cancel(batch.id)
        done = _wait(sdk, batch.id, ("cancelled",), 60)
        jobs = client.lrange(OAI_BATCH_JOBS.format(batch.id), 0, -1)
        assert len(jobs) == len(set(jobs)) == FULL_QUEUE_LIMIT
        assert sum(1 for _ in client.scan_iter(JOB.format("*"))) == FULL_QUEUE_LIMIT  # no second copy
        errors = _jsonl(sdk, done.error_file_id)
        assert sorted(line["custom_id"] for line in errors) == sorted(f"r-{i}" for i in range(10))
        assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
        assert done.request_counts.completed == 0 and done.output_file_id is None
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_lines_are_split_across_chunks_and_a_too_long_one_is_never_held() -> None:
    data = b'{"a": 1}\n' + b"x" * 50 + b"\n\n" + b"y" * 7 + b"\n" + b"z" * 40

    async def split(chunk: int) -> list[tuple[bytes | None, int]]:
        async def stream():
            for start in range(0, len(data), chunk):
                yield data[start:start + chunk]

        return [line async for lines in lines_of(stream(), max_line_bytes=20) for line in lines]

    for chunk in (3, 8, 64, 1000):
        lines = asyncio.run(split(chunk))
        assert lines == [(b'{"a": 1}', 9), (None, 51), (b"", 1), (b"y" * 7, 8), (None, 40)], chunk
        assert sum(size for _line, size in lines) == len(data)


def test_the_line_check_numbers_each_line_it_refuses() -> None:
    check = LineCheck(max_lines=10, max_line_bytes=20)
    for raw in (_line("a", {}).encode(), None, b"", b"not json"):
        check.line(raw)
    check.close()
    assert [(e["line"], e["code"]) for e in check.errors] == [(2, "line_too_long"), (4, "invalid_json_line")]
    assert check.lines == 2
