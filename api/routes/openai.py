"""An OpenAI-compatible surface under `/openai/v1`: chat completions with images, streamed or not,
and the model list, as a thin layer over vlmq's own jobs (same validation, cache, lanes, keys, rate
limits, metrics and job records; no second path to a model).

`POST /openai/v1/chat/completions` becomes one vlmq job, by what the model runs and what the
messages hold:

- a model that runs `chat` gets a `chat` job: the messages' text (a `developer` turn is a system
  turn; a user turn with only the image asks "Describe this image."), the image the single
  `image_url` part;
- else a model that runs `vqa`, given a question (the last user turn's text), answers it (`vqa`);
- else a model that runs `caption` captions the image (the user's text, if any, is the caption's
  prompt prefix).

Exactly one image per request (a data URI or an http(s) URL, checked like `image_url`).
`max_completion_tokens` (or `max_tokens`) is the job's `max_new_tokens`; `temperature`, `top_p` and
`seed` map to the job type's decoding where it has one; `n` must be 1. Without `stream` the request
waits for the job and answers a `chat.completion`; with it, OpenAI's SSE chunks, fed by the job's
`text` events, end with `data: [DONE]`. The vlmq job id is in the `X-Vlmq-Job-Id` header (follow it
at `/v1/jobs/{id}`). Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmq.api.auth import spend
from vlmq.api.deps import CallerDep, ServicesDep
from vlmq.api.errors import ApiError, invalid_request
from vlmq.api.events import follow
from vlmq.api.submit import Delivery, submit_one
from vlmq.jobs import JobRecord, JobRequest, JobStatus, Lane
from vlmq.registry import ModelSpec
from vlmq.store import aget
from vlmq.views import output_text

#: How long a request without `stream` waits for its job.
WAIT_S = 600
#: A chat model's user turn that holds only the image.
DESCRIBE = "Describe this image."
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}
_REQUEST = TypeAdapter(JobRequest)
#: vlmq's field names as the OpenAI request names them (a refusal's `param`).
_PARAMS = {"image_url": "messages", "question": "messages", "prompt": "messages", "max_new_tokens":
           "max_completion_tokens", "body": None}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body; vlmq's 422 (a request it refuses) is OpenAI's 400."""
    status = 400 if status == 422 else status
    param = _PARAMS.get(param, param) if param else None
    body = {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class OpenAIRoute(APIRoute):
    """A route whose refusals (its own, its dependencies', validation) answer in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return openai_error(exc.status, exc.message, exc.code, exc.field, exc.headers)
            except (RequestValidationError, ValidationError) as exc:
                if any(e.get("type") == "json_invalid" for e in exc.errors()):
                    return openai_error(400, "the body is not valid JSON", "invalid_json")
                error = invalid_request(exc)
                return openai_error(400, error.message, error.code, error.field)
            except StarletteHTTPException as exc:  # a body the JSON parser gave up on (too deep)
                return openai_error(exc.status_code, str(exc.detail), "invalid_json" if exc.status_code == 400 else None)

        return route


router = APIRouter(prefix="/openai/v1", tags=["openai"], route_class=OpenAIRoute)


# --- the request ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str = Field(..., max_length=16 * 1024 * 1024)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str = Field(..., min_length=1, max_length=64)
    messages: list[Message] = Field(..., min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)


def _text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text or "" for part in message.content or [] if part.type == "text").strip()


def _image(request: ChatCompletionRequest) -> str:
    urls = [part.image_url.url for message in request.messages if isinstance(message.content, list)
            for part in message.content if part.type == "image_url" and part.image_url is not None]
    if len(urls) != 1:
        raise ApiError(400, "invalid_image_count", f"a request holds exactly one image_url content part "
                       f"(this one holds {len(urls)})", field="messages")
    return urls[0]


def job_body(request: ChatCompletionRequest, spec: ModelSpec) -> dict[str, Any]:
    """The vlmq job request of a chat completion for the model `spec` (the rule in the docstring)."""
    body: dict[str, Any] = {"model": spec.name, "image_url": _image(request)}
    tokens = request.max_completion_tokens or request.max_tokens
    users = [m for m in request.messages if m.role == "user"]
    question = _text(users[-1]) if users else ""
    if "chat" in spec.tasks:
        turns = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m) or DESCRIBE}
                 for m in request.messages if _text(m) or m.role == "user"]
        body.update(type="chat", messages=turns)
        body.update({k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v is not None})
    elif "vqa" in spec.tasks and question:
        body.update(type="vqa", question=question)
    elif "caption" in spec.tasks:
        body.update(type="caption", **({"prompt": question} if question else {}))
        if request.temperature:
            body["decoding"] = {"strategy": "temperature", "temperature": request.temperature}
    else:
        raise ApiError(400, "model_cannot_chat", f"model {spec.name!r} runs {', '.join(spec.tasks)}: "
                       "give vqa models a question", field="messages")
    if tokens is not None:
        body["max_new_tokens"] = tokens
    if request.seed is not None:
        body["seed"] = request.seed
    return body


# --- the answers --------------------------------------------------------------------------------------


def _completion(record: JobRecord, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{record.id}", "object": "chat.completion", "created": int(record.created_at),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": output_text(record.output), "refusal": None},
                     "finish_reason": "stop", "logprobs": None}],
    }


def _chunk(record: JobRecord, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    chunk = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": int(record.created_at),
             "model": model, "system_fingerprint": None,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    return f"data: {json.dumps(chunk)}\n\n"


def _failure(record: JobRecord) -> tuple[int, str, str]:
    error = record.error or {}
    if record.status is JobStatus.failed:
        return 500, error.get("message") or "the job failed", error.get("code") or "job_failed"
    return 500, f"the job ended {record.status.value}: {record.cancel_reason or ''}".strip(), record.status.value


async def _stream(services, record: JobRecord, model: str) -> AsyncIterator[str]:
    yield _chunk(record, model, {"role": "assistant", "content": ""})
    sent = ""
    async for event in follow(services.aredis, record, until=time.monotonic() + WAIT_S):
        if event is None:
            yield ": ping\n\n"
        elif event.event == "text":
            piece = event.data.get("text", "")
            sent += piece
            yield _chunk(record, model, {"content": piece})
    final = await aget(services.aredis, record.id) or record
    if final.status is JobStatus.succeeded:
        text = output_text(final.output)
        if text.startswith(sent) and len(text) > len(sent):  # what was not streamed (a vqa answer, the end)
            yield _chunk(record, model, {"content": text[len(sent):]})
        yield _chunk(record, model, {}, "stop")
    else:
        _status, message, code = _failure(final)
        yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'param': None, 'code': code}})}\n\n"
    yield "data: [DONE]\n\n"


# --- the routes ---------------------------------------------------------------------------------------


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, services: ServicesDep, caller: CallerDep) -> Response:
    """OpenAI's chat completions over one vlmq job (the module's docstring says which)."""
    await spend(caller, services)
    if body.model not in services.registry:
        raise ApiError(404, "model_not_found", f"the model {body.model!r} does not exist; see GET /openai/v1/models",
                       field="model")
    job_request = _REQUEST.validate_python(job_body(body, services.registry.get(body.model)))
    delivery = Delivery(owner=caller.owner, lane=Lane.interactive, deadline=None, webhook=None, webhook_events=())
    record = (await submit_one(services, job_request, None, delivery)).record
    headers = {"X-Vlmq-Job-Id": record.id}
    if body.stream:
        return StreamingResponse(_stream(services, record, body.model), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    if not record.status.final:
        async for _event in follow(services.aredis, record, until=time.monotonic() + WAIT_S):
            pass
        record = await aget(services.aredis, record.id) or record
    if record.status is JobStatus.succeeded:
        return JSONResponse(_completion(record, body.model), headers=headers)
    if not record.status.final:
        return openai_error(504, f"job {record.id} did not end within {WAIT_S} s; follow it at /v1/jobs/{record.id}",
                            "timeout", headers=headers)
    status, message, code = _failure(record)
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
