"""The OpenAI-compatible surface (/openai/v1) driven by the real `openai` package, pointed at the
stack's API process: chat completions with an image, streamed and not, routed by the model's tasks;
the model list; errors in OpenAI's shape."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import redis

from tests.utils.images import cat, data_uri
from vlmq.keys import KeyStore

CAT = data_uri(cat().resize((64, 64)))


@pytest.fixture(scope="module")
def key(stack) -> str:
    """A vlmq API key: the SDK sends it as `Authorization: Bearer`, as vlmq's own API takes it."""
    return KeyStore(redis.Redis.from_url(stack.redis_url)).create("openai-sdk", rate=100, burst=100)[0]


@pytest.fixture(scope="module")
def client(stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/openai/v1", api_key=key, max_retries=0)


def _get(stack, key: str, path: str) -> dict:
    return httpx.get(f"{stack.url}{path}", headers={"Authorization": f"Bearer {key}"}).json()


def _image_message(text: str | None) -> list[dict]:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": CAT}}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def test_a_chat_model_answers_a_completion_and_names_its_job(client: openai.OpenAI, stack, key: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llava-chat", messages=[{"role": "system", "content": "Be brief."}, *_image_message("What is this?")],
        max_completion_tokens=5, temperature=0, seed=3)
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "llava-chat"
    assert completion.choices[0].message.role == "assistant"
    used = completion.usage  # the adapter's token counts: `length` when it used all it was allowed
    assert used.prompt_tokens > 0 and 1 <= used.completion_tokens <= 5
    assert used.total_tokens == used.prompt_tokens + used.completion_tokens
    assert completion.choices[0].finish_reason == ("length" if used.completion_tokens == 5 else "stop")
    job_id = raw.headers["x-vlmq-job-id"]
    job = _get(stack, key, f"/v1/jobs/{job_id}")  # the same job machinery and record, the key's own
    assert job["type"] == "chat" and job["status"] == "succeeded"
    assert job["output"]["text"] == completion.choices[0].message.content
    assert job["input"]["max_new_tokens"] == 5 and job["input"]["messages"][0]["role"] == "system"


def test_the_job_type_follows_the_model_and_the_message(client: openai.OpenAI, stack, key: str) -> None:
    cases = [("vilt-vqa", "what animal is this?", "vqa"), ("blip-base", None, "caption"),
             ("blip-base", "a picture of", "caption")]
    for model, text, job_type in cases:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=_image_message(text),
                                                                max_tokens=4)
        job = _get(stack, key, f"/v1/jobs/{raw.headers['x-vlmq-job-id']}")
        assert job["type"] == job_type and job["status"] == "succeeded", job
        answer = job["output"].get("answer") or job["output"].get("text")
        assert raw.parse().choices[0].message.content == answer


def test_streaming_ends_with_done_and_adds_up_to_the_answer(client: openai.OpenAI, stack, key: str) -> None:
    chunks = list(client.chat.completions.create(model="llava-chat", messages=_image_message("Describe it."),
                                                 max_completion_tokens=8, temperature=0, stream=True))
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    job_id = chunks[0].id.removeprefix("chatcmpl-")
    assert _get(stack, key, f"/v1/jobs/{job_id}")["output"]["text"] == streamed
    with httpx.stream("POST", f"{stack.url}/openai/v1/chat/completions", timeout=60,
                      json={"model": "vilt-vqa", "messages": _image_message("what is it?"), "stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"  # a vqa answer is not token-streamed: it comes whole, then the end


def test_stop_ends_the_answer_before_it_streamed_or_not(client: openai.OpenAI, stack, key: str) -> None:
    ask = {"model": "llava-chat", "messages": _image_message("describe the picture"), "max_completion_tokens": 24,
           "temperature": 0}
    free = client.chat.completions.create(**ask).choices[0]
    text = free.message.content
    assert free.finish_reason == "length" and len(text) > 8, free
    at = next(i for i in range(len(text) // 2, len(text) - 1) if not any(c.isspace() for c in text[i : i + 2]))
    stop = text[at : at + 2]
    expected = text[: text.find(stop)].strip()
    cut = client.chat.completions.create(**ask, stop=stop)
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 24
    chunks = list(client.chat.completions.create(**ask, stop=[stop, "never \u2603"], stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() == expected and stop not in streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == cut.usage.completion_tokens


def test_models_in_openais_list_format(client: openai.OpenAI, stack) -> None:
    names = {m.id for m in client.models.list()}
    assert {"blip-base", "llava-chat", "vilt-vqa"} <= names
    assert client.models.retrieve("blip-base").owned_by == "vlmq"


@pytest.mark.parametrize(("body", "param"), [
    (b"not json", None),
    (b"[1, 2]", None),
    (b'{"model": "x", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (b"{}", "model"),
    (b'{"model": "blip-base", "messages": "x"}', "messages"),
    (b'{"model": "blip-base", "messages": []}', "messages"),
    (b'{"model": "blip-base", "messages": [{"role": "user", "content": [{"type": "video"}]}]}', None),
    ((b'{"model": "llava-chat", "messages": [{"role": "user", "content": [{"type": "image_url", '
     b'"image_url": {"url": "file:///etc/passwd"}}]}]}'), "messages"),
    ((b'{"model": "llava-chat", "max_tokens": 99999, "messages": [{"role": "user", "content": [{"type": '
     b'"image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}'), "max_completion_tokens"),
    (b'{"model": "llava-chat", "messages": [{"role": "user", "content": "hi"}], "tools": []}', "tools"),
    (b'{"model": "vilt-vqa", "messages": %s, "stop": "x"}' % json.dumps(_image_message("what?")).encode(), "stop"),
    (b'{"model": "llava-chat", "messages": %s, "stop": ["a", "b", "c", "d", "e"]}'
     % json.dumps(_image_message("hi")).encode(), "stop"),
    (b'{"model": "blip-base", "messages": %s, "stop": [""]}' % json.dumps(_image_message(None)).encode(), "stop"),
])
def test_garbage_is_a_400_in_openais_shape(app_client, body: bytes, param: str | None) -> None:
    response = app_client.post("/openai/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["message"] and (param is None or error["param"].split(".")[0] == param), error


def test_errors_come_in_openais_shape_with_its_status_codes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=_image_message("hi"))
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as no_image:
        client.chat.completions.create(model="llava-chat", messages=[{"role": "user", "content": "hi"}])
    assert no_image.value.body["type"] == "invalid_request_error" and no_image.value.body["param"] == "messages"
    bad_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                              {"type": "text", "text": "hi"}]}]
    with pytest.raises(openai.BadRequestError) as undecodable:
        client.chat.completions.create(model="llava-chat", messages=bad_image)
    assert undecodable.value.body["code"] == "invalid_image"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llava-chat", messages=_image_message("hi"), n=2)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.AuthenticationError) as unknown_key:
        openai.OpenAI(base_url=str(client.base_url), api_key="not-a-key", max_retries=0).models.list()
    assert unknown_key.value.body["type"] == "authentication_error"
