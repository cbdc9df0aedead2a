"""OpenAI's shapes: errors (the body, and a route class whose refusals answer in it), the chat
completion request (validated: anything else is refused), the vlmq job it becomes (`job_body`), the
`chat.completion` object and the stream's chunks of a job. Used by the OpenAI routes and by the Batch
API's lines (api/openai_batches.py), so the two cannot drift.

The rule a request becomes a job by:

- a model that runs `chat` gets a `chat` job: the messages' text (a `developer` turn is a system
  turn; a user turn with only the image asks "Describe this image."), the image the single
  `image_url` part;
- else a model that runs `vqa`, given a question (the last user turn's text), answers it (`vqa`);
- else a model that runs `caption` captions the image (the user's text, if any, is the caption's
  prompt prefix).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmq.api.errors import ApiError, invalid_request
from vlmq.jobs import JobRecord, JobRequest, JobStatus
from vlmq.registry import ModelSpec, Registry
from vlmq.views import output_text

_JOB_REQUEST = TypeAdapter(JobRequest)
#: A chat model's user turn that holds only the image.
DESCRIBE = "Describe this image."
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}
#: vlmq's field names as the OpenAI request names them (a refusal's `param`).
_PARAMS = {"image_url": "messages", "question": "messages", "prompt": "messages", "max_new_tokens":
           "max_completion_tokens", "body": None}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None
               ) -> tuple[int, dict[str, Any]]:
    """(OpenAI's status, OpenAI's error body) of a vlmq refusal: vlmq's 422 is OpenAI's 400."""
    status = 400 if status == 422 else status
    param = _PARAMS.get(param, param) if param else None
    return status, {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                              "code": code}}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error response."""
    status, body = error_body(status, message, code, param)
    return JSONResponse(body, status_code=status, headers=headers)


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


# --- the request -------------------------------------------------------------------------------------


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
    stop: str | list[str] | None = None
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
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    if stop:
        if body["type"] == "vqa":
            raise ApiError(400, "stop_not_supported", f"model {spec.name!r} answers a question (vqa), which "
                           "takes no stop strings", field="stop")
        body["stop"] = stop
    if tokens is not None:
        body["max_new_tokens"] = tokens
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def job_request_of(request: ChatCompletionRequest, registry: Registry) -> JobRequest:
    """The validated vlmq job request of a chat completion (an unknown model: 404, as OpenAI answers)."""
    if request.model not in registry:
        raise ApiError(404, "model_not_found", f"the model {request.model!r} does not exist; see GET "
                       "/openai/v1/models", field="model")
    return _JOB_REQUEST.validate_python(job_body(request, registry.get(request.model)))


# --- the answers --------------------------------------------------------------------------------------


def usage(record: JobRecord) -> dict[str, int] | None:
    """OpenAI's `usage` of a job whose adapter counted its tokens (generative models do; a classifier
    such as ViLT does not)."""
    counted = (record.output or {}).get("usage")
    if not counted:
        return None
    prompt, completion_tokens = int(counted["prompt_tokens"]), int(counted["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def finish_reason(record: JobRecord) -> str:
    """The adapter's: `length` when the answer used every token it was allowed without ending, else
    `stop` (also for a model that does not generate: a classifier's answer is whole)."""
    return (record.output or {}).get("finish_reason") or "stop"


def completion(record: JobRecord, model: str) -> dict[str, Any]:
    """The `chat.completion` object of a succeeded job."""
    message = {"role": "assistant", "content": output_text(record.output), "refusal": None}
    return {
        "id": f"chatcmpl-{record.id}", "object": "chat.completion", "created": int(record.created_at),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(record), "logprobs": None}],
        "usage": usage(record),
    }


def chunk(record: JobRecord, model: str, delta: dict[str, Any] | None, finish: str | None = None,
          usage: dict[str, int] | None = None) -> str:
    """One SSE event of a streamed completion: a delta (None: the usage chunk, with no choices)."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": int(record.created_at),
        "model": model, "system_fingerprint": None,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def failure(record: JobRecord) -> tuple[int, str, str]:
    """(status, message, code) of a job that ended without an answer."""
    error = record.error or {}
    if record.status is JobStatus.failed:
        return 500, error.get("message") or "the job failed", error.get("code") or "job_failed"
    return 500, f"the job ended {record.status.value}: {record.cancel_reason or ''}".strip(), record.status.value
