"""Bad input: each a 4xx with a JSON error naming the field, never a 500, never a job left behind."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.utils.images import astronaut, cat, data_uri, encode

CAT = data_uri(cat())


@pytest.fixture(scope="module")
def api(stack) -> httpx.Client:
    with stack.client() as client:
        yield client


def _error(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "caption", "model": "nope", "image_url": CAT}, "model"),
        ({"type": "vqa", "model": "blip-base", "image_url": CAT, "question": "q?"}, "model"),
        ({"type": "vqa", "model": "vilt-vqa", "image_url": CAT}, "question"),
        ({"type": "vqa", "model": "vilt-vqa", "image_url": CAT, "question": "   "}, "question"),
        ({"type": "vqa", "model": "vilt-vqa", "image_url": CAT, "question": "x" * 1_000_000}, "question"),
        ({"type": "caption", "model": "blip-base", "image_url": CAT, "max_new_tokens": -1}, "max_new_tokens"),
        ({"type": "caption", "model": "blip-base", "image_url": CAT, "max_new_tokens": 10**9}, "max_new_tokens"),
        ({"type": "caption", "model": "blip-base", "image_url": CAT, "num_beams": 1000}, "num_beams"),
        ({"type": "caption", "model": "blip-base", "image_url": CAT, "decoding": {"strategy": "nucleus"}},
         "decoding"),
        ({"type": "caption", "model": "blip-base", "image_url": CAT, "colour": "red"}, "colour"),
        ({"type": "teleport", "model": "blip-base", "image_url": CAT}, "type"),
        ({"model": "blip-base", "image_url": CAT}, "type"),
        ({"type": "detect", "model": "faces", "image_url": CAT, "prompt": "find the cat"}, "prompt"),
        ({"type": "chat", "model": "llava-chat", "image_url": CAT, "messages": []}, "messages"),
        ({"type": "chat", "model": "llava-chat", "image_url": CAT,
          "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"type": "compare", "models": ["blip-base"], "image_url": CAT, "task": {"type": "caption"}}, "models"),
        ({"type": "compare", "models": ["blip-base", "vilt-vqa"], "image_url": CAT,
          "task": {"type": "caption"}}, "models.1"),
        ({"type": "compare", "models": ["blip-base", "blip-base"], "image_url": CAT,
          "task": {"type": "caption"}}, "models"),
        ({"type": "caption", "model": "blip-base"}, "image_url"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(api: httpx.Client, body: dict, field: str) -> None:
    error = _error(api.post("/v1/jobs", json=body), 422)
    assert error["field"] == field or error["field"].startswith(field), error


@pytest.mark.parametrize(
    ("image_url", "code"),
    [
        ("data:image/png;base64," + "A" * 40, "invalid_image"),
        (data_uri(b"%PDF-1.4 this is not an image"), "invalid_image"),
        (data_uri(encode(astronaut())[:3000]), "invalid_image"),
        ("data:image/png;base64,***", "invalid_image_url"),
        ("file:///etc/passwd", "url_not_allowed"),
        ("http://127.0.0.1:6379/", "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
        ("http://10.1.2.3/cat.png", "url_not_allowed"),
        ("not a url", "url_not_allowed"),
    ],
)
def test_bad_images_and_urls(api: httpx.Client, image_url: str, code: str) -> None:
    error = _error(api.post("/v1/jobs", json={"type": "caption", "model": "blip-base", "image_url": image_url}),
                   422, "image_url")
    assert error["code"] == code, error


def test_huge_pixel_counts_are_413(api: httpx.Client) -> None:
    wide = io.BytesIO()
    Image.new("1", (100_000, 1)).save(wide, "PNG")
    error = _error(api.post("/v1/jobs", data={"request": '{"type":"caption","model":"blip-base"}'},
                            files={"image": ("w.png", wide.getvalue())}), 413, "image")
    assert error["code"] == "image_too_large"


def test_malformed_json_and_wrong_content_type(api: httpx.Client) -> None:
    _error(api.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 400)
    _error(api.post("/v1/jobs", content=b"[1, 2]", headers={"content-type": "application/json"}), 422)
    _error(api.post("/v1/jobs", content=b"type=caption", headers={"content-type": "text/plain"}), 415)
    _error(api.post("/v1/jobs", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)


def test_multipart_needs_both_parts(api: httpx.Client) -> None:
    only_request = {"request": (None, '{"type":"caption","model":"blip-base"}')}
    _error(api.post("/v1/jobs", files=only_request), 422, "image")
    _error(api.post("/v1/jobs", files={"image": ("c.png", encode(cat()))}), 422, "request")
    _error(api.post("/v1/jobs", data={"request": "{oops"}, files={"image": ("c.png", encode(cat()))}), 400)


def test_oversize_body_refused_from_its_header(stack) -> None:
    """100 MB declared: the answer (413) comes after the headers alone, no body byte is read."""
    import json
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 104857600\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "body_too_large"


def test_oversize_chunked_body_is_cut_off(api: httpx.Client) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    response = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    _error(response, 413)


def test_no_job_left_behind_by_refusals(api: httpx.Client, stack) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    before = len(client.keys("vlmq:job:*"))
    for _ in range(3):
        api.post("/v1/jobs", json={"type": "caption", "model": "nope", "image_url": CAT})
        api.post("/v1/jobs", json={"type": "caption", "model": "blip-base", "image_url": "file:///x"})
    assert len(client.keys("vlmq:job:*")) == before


def test_unknown_routes_and_methods_are_json(api: httpx.Client) -> None:
    _error(api.get("/v1/nothing"), 404)
    _error(api.delete("/v1/jobs"), 405)
