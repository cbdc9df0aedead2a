"""An OpenAI-compatible surface under `/openai/v1`: chat completions with images, streamed or not,
and the model list, as a thin layer over vlmq's own jobs (same validation, cache, lanes, keys, rate
limits, metrics and job records; no second path to a model). The Batch API is in
api/routes/openai_batches.py.

`POST /openai/v1/chat/completions` becomes one vlmq job (api/openai_chat.py says by which rule).
Exactly one image per request (a data URI or an http(s) URL, checked like `image_url`).
`max_completion_tokens` (or `max_tokens`) is the job's `max_new_tokens`; `temperature`, `top_p` and
`seed` map to the job type's decoding where it has one; `n` must be 1. Without `stream` the request
waits for the job and answers a `chat.completion`; with it, OpenAI's SSE chunks, fed by the job's
`text` events, end with `data: [DONE]` (`stream_options.include_usage`: a last chunk with the token
counts). The vlmq job id is in the `X-Vlmq-Job-Id` header (follow it at `/v1/jobs/{id}`). Errors are
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, StreamingResponse

from vlmq.api.auth import spend
from vlmq.api.deps import CallerDep, ServicesDep
from vlmq.api.errors import ApiError
from vlmq.api.events import follow
from vlmq.api.openai_shapes import (
    ChatCompletionRequest,
    OpenAIRoute,
    chunk,
    completion,
    error_body,
    failure,
    finish_reason,
    job_request_of,
    openai_error,
    usage,
)
from vlmq.api.submit import Delivery, submit_one
from vlmq.jobs import JobRecord, JobStatus, Lane
from vlmq.store import aget
from vlmq.views import output_text

#: How long a request without `stream` waits for its job.
WAIT_S = 600


router = APIRouter(prefix="/openai/v1", tags=["openai"], route_class=OpenAIRoute)


# --- the stream ------------------------------------------------------------------------------------


async def _stream(services, record: JobRecord, model: str, include_usage: bool) -> AsyncIterator[str]:
    yield chunk(record, model, {"role": "assistant", "content": ""})
    sent = ""
    async for event in follow(services.aredis, record, until=time.monotonic() + WAIT_S):
        if event is None:
            yield ": ping\n\n"
        elif event.event == "text":
            piece = event.data.get("text", "")
            sent += piece
            yield chunk(record, model, {"content": piece})
    final = await aget(services.aredis, record.id) or record
    if final.status is JobStatus.succeeded:
        text = output_text(final.output)
        if text.startswith(sent) and len(text) > len(sent):  # what was not streamed (a vqa answer, the end)
            yield chunk(record, model, {"content": text[len(sent):]})
        yield chunk(record, model, {}, finish_reason(final))
        if include_usage:
            yield chunk(record, model, None, usage=usage(final))
    else:
        _status, message, code = failure(final)
        yield f"data: {json.dumps(error_body(500, message, code)[1])}\n\n"
    yield "data: [DONE]\n\n"


# --- the routes ---------------------------------------------------------------------------------------


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, services: ServicesDep, caller: CallerDep) -> Response:
    """OpenAI's chat completions over one vlmq job (the module's docstring says which)."""
    await spend(caller, services)
    job_request = job_request_of(body, services.registry)
    delivery = Delivery(owner=caller.owner, lane=Lane.interactive)
    record = (await submit_one(services, job_request, None, delivery)).record
    headers = {"X-Vlmq-Job-Id": record.id}
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(services, record, body.model, include_usage), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    if not record.status.final:
        async for _event in follow(services.aredis, record, until=time.monotonic() + WAIT_S):
            pass
        record = await aget(services.aredis, record.id) or record
    if record.status is JobStatus.succeeded:
        return JSONResponse(completion(record, body.model), headers=headers)
    if not record.status.final:
        return openai_error(504, f"job {record.id} did not end within {WAIT_S} s; follow it at /v1/jobs/{record.id}",
                            "timeout", headers=headers)
    status, message, code = failure(record)
    return openai_error(status, message, code, headers=headers)


@router.get("/models")
def list_models(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """The registered models in OpenAI's list format (a key, when given, must be valid)."""
    return {"object": "list", "data": [{"id": spec.name, "object": "model", "created": 0, "owned_by": "vlmq"}
                                       for spec in services.registry]}


@router.get("/models/{name}")
def get_model(name: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    if name not in services.registry:
        raise ApiError(404, "model_not_found", f"the model {name!r} does not exist", field="model")
    return {"id": name, "object": "model", "created": 0, "owned_by": "vlmq"}
