"""Bad input: each a 4xx with a JSON error naming the field, never a 500, never a job left behind.

In process (`app_client`, tests/api/conftest.py) where the HTTP contract is the point; through the
stack's API process where a real socket is (keep-alive after an error, a body over the limit on the
wire, a client hanging up)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.utils.images import astronaut, cat, data_uri, encode

CAT = data_uri(cat())


@pytest.fixture(scope="module")
def api(app_client) -> httpx.Client:
    return app_client


@pytest.fixture(scope="module")
def live(stack) -> httpx.Client:
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


def _multipart(*parts: tuple[str, str | None, bytes], boundary: str = "vlmqtest", end: bool = True) -> bytes:
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + (f"--{boundary}--\r\n".encode() if end else b"")


def _post_multipart(api: httpx.Client, body: bytes, content_type: str = "multipart/form-data; boundary=vlmqtest"):
    return api.post("/v1/jobs", content=body, headers={"content-type": content_type})


def test_multipart_parts_are_checked_each_with_its_limit(api: httpx.Client, settings) -> None:
    """Only `request` and `image` may come, each once; each part has its size limit; a body that is not
    well-formed multipart is a 400. A `request` part sent as a file (curl -F request=@job.json) counts."""
    request = b'{"type":"caption","model":"blip-base"}'
    image = encode(cat(), "JPEG")
    ok = _post_multipart(api, _multipart(("request", "job.json", request), ("image", "c.jpg", image)))
    assert ok.status_code == 202, ok.text
    error = _error(_post_multipart(api, _multipart(("request", None, request), ("extra", None, b"1"),
                                                   ("image", "c.jpg", image))), 422, "extra")
    assert "unknown part" in error["message"]
    error = _error(_post_multipart(api, _multipart(("request", None, request), ("image", "c.jpg", image),
                                                   ("image", "d.jpg", image))), 422, "image")
    assert "twice" in error["message"]
    big = _post_multipart(api, _multipart(("request", None, b" " * (1024 * 1024 + 1)), ("image", "c.jpg", image)))
    assert _error(big, 413, "request")["code"] == "part_too_large"
    limit = settings.max_image_bytes
    huge = _post_multipart(api, _multipart(("request", None, request), ("image", "h.jpg", image + bytes(limit))))
    assert _error(huge, 413, "image")["code"] == "image_too_large"
    for body, content_type in (
        (_multipart(("request", None, request), ("image", "c.jpg", image), end=False),
         "multipart/form-data; boundary=vlmqtest"),  # no closing boundary
        (b"no parts at all", "multipart/form-data; boundary=vlmqtest"),
        (_multipart(("request", None, request), ("image", "c.jpg", image)), "multipart/form-data"),  # no boundary
    ):
        assert _error(_post_multipart(api, body, content_type), 400, "body")["code"] == "invalid_multipart"


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


def test_oversize_chunked_body_is_cut_off(live: httpx.Client) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    response = live.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
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


# --- found by real clients (issue 13) ----------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"type":"caption","x":' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [1_000, 10_000, 1_000_000])
def test_deeply_nested_json_is_400_and_the_connection_stays_usable(live: httpx.Client, depth: int) -> None:
    image = encode(cat(), "PNG")
    refusals = [
        live.post("/v1/jobs", content=_nested(depth), headers={"content-type": "application/json"}),
        live.post("/v1/jobs", data={"request": _nested(depth)}, files={"image": ("cat.png", image)}),
        live.post("/v1/batches", content='{"jobs":[' + _nested(depth) + "]}",
                  headers={"content-type": "application/json"}),
    ]
    json_body, multipart, batch = refusals
    for response, field in ((json_body, "body"), (batch, "body")):
        assert _error(response, 400, field)["code"] == "invalid_json"
    if len(_nested(depth)) <= 1024 * 1024:
        assert _error(multipart, 400, "request")["code"] == "invalid_json"
    else:  # the multipart `request` part has a size limit of its own
        assert _error(multipart, 413, "request")["code"] == "part_too_large"
    # the same keep-alive connection (httpx raises on a reset one) answers the next request
    assert live.get("/healthz").status_code == 200


def test_duplicate_keys_are_422(api: httpx.Client) -> None:
    body = '{"type":"caption","type":"vqa","model":"vilt-vqa","question":"q?","image_url":"' + CAT + '"}'
    error = _error(api.post("/v1/jobs", content=body, headers={"content-type": "application/json"}), 422, "body")
    assert "'type' appears twice" in error["message"]
    nested = '{"type":"compare","models":["blip-base","blip-large"],"image_url":"' + CAT + \
        '","task":{"type":"caption","max_new_tokens":3,"max_new_tokens":4}}'
    _error(api.post("/v1/jobs", content=nested, headers={"content-type": "application/json"}), 422, "body")


@pytest.mark.parametrize("question", ["\u200b\u200b\u200b", "what\x00 is it?", "\ufeff \u2060", "\x1b[31mred"])
def test_invisible_or_control_text_is_422(api: httpx.Client, question: str) -> None:
    body = {"type": "vqa", "model": "vilt-vqa", "image_url": CAT, "question": question}
    _error(api.post("/v1/jobs", json=body), 422, "question")
    chat = {"type": "chat", "model": "llava-chat", "image_url": CAT, "messages": [{"role": "user", "content": question}]}
    _error(api.post("/v1/jobs", json=chat), 422, "messages.0.content")


def test_prefer_wait_takes_whole_seconds_up_to_60(api: httpx.Client) -> None:
    body = {"type": "caption", "model": "blip-base", "image_url": CAT}
    for value in ("wait=1e9", "wait=99999", "wait=61", "wait=2.5", "wait=-1", "wait=soon"):
        _error(api.post("/v1/jobs", json=body, headers={"Prefer": value}), 422, "Prefer")
    assert api.post("/v1/jobs", json=body, headers={"Prefer": "respond-async"}).status_code in (200, 202)


def test_base64_with_line_breaks_is_accepted(api: httpx.Client) -> None:
    payload = CAT.split(",", 1)[1]
    wrapped = "\r\n".join(payload[i:i + 76] for i in range(0, len(payload), 76))  # RFC 2045 lines
    response = api.post("/v1/jobs", json={"type": "caption", "model": "blip-base",
                                          "image_url": "data:image/png;base64," + wrapped})
    assert response.status_code in (200, 202), response.text  # decoded: a broken decode is a 422


def test_head_options_and_allow(api: httpx.Client) -> None:
    head = api.head("/healthz")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert api.head("/v1/models").status_code == 200
    options = api.options("/v1/jobs")
    assert options.status_code == 204
    assert set(options.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    refused = api.put("/v1/jobs/abc")
    _error(refused, 405)
    assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_a_client_that_hangs_up_mid_upload_leaves_no_error_and_no_job(stack) -> None:
    """The connection closes while the multipart body is still arriving: nothing is created, the API
    logs no unhandled error, and it keeps serving."""
    import socket
    import time
    from urllib.parse import urlsplit

    def submitted() -> float:
        with stack.client() as api:
            return sum(float(line.rsplit(" ", 1)[1]) for line in api.get("/metrics").text.splitlines()
                       if line.startswith("vlmq_jobs_submitted_total{"))

    where = urlsplit(stack.url)
    before = submitted()
    log_at = stack.api.log.stat().st_size
    boundary = "vlmqhangup"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + encode(cat(), "JPEG")[:2000]
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(part) + 50_000}\r\n\r\n").encode()
    with socket.create_connection((where.hostname, where.port), timeout=5) as conn:
        conn.sendall(head + part)
        time.sleep(0.3)
    time.sleep(0.5)
    with stack.client() as api:
        assert api.get("/healthz").status_code == 200
    with open(stack.api.log, "rb") as handle:
        handle.seek(log_at)
        new = handle.read().decode(errors="replace")
    assert "unhandled error" not in new and "Exception in ASGI application" not in new, new[-2000:]
    assert submitted() == before
