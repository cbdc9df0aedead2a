"""URL fetching: only public addresses, checked at every redirect; size and time limits."""

from __future__ import annotations

import time

import pytest

from tests.utils.http_server import endless, serve, silent
from tests.utils.images import astronaut, encode
from vlmq.safe_http import UnsafeURL, check_url, fetch

PNG = encode(astronaut())


def _fetch(url: str, **kw):
    opts = {"allow": ["localhost"], "max_bytes": 5_000_000, "timeout_s": 2.0, "max_redirects": 3}
    opts.update(kw)
    return fetch(url, **opts)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x.png",
        "gopher://localhost/",
        "http://127.0.0.1/x.png",
        "http://[::1]/x.png",
        "http://10.0.0.1/x.png",
        "http://192.168.1.1/x.png",
        "http://172.16.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.png",
        "http://0.0.0.0/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[fe80::1]/x.png",
        "http://user:pass@example.com/x.png",
    ],
)
def test_refused_before_any_connection(url: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, allow=["localhost"])
    assert info.value.code in ("url_not_allowed", "invalid_url") and info.value.status == 422


def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url("http://localhost/x.png", allow=[])
    assert "not a public address" in info.value.message


def test_allowed_host_is_fetched() -> None:
    with serve({"/a.png": (200, {"Content-Type": "image/png"}, PNG)}) as port:
        assert _fetch(f"http://localhost:{port}/a.png") == PNG


def test_redirect_to_a_private_address_is_refused() -> None:
    routes = {"/r": (302, {"Location": "http://127.0.0.1:1/secret"}, b""),
              "/meta": (302, {"Location": "http://169.254.169.254/latest"}, b"")}
    with serve(routes) as port:
        for path in ("/r", "/meta"):
            with pytest.raises(UnsafeURL) as info:
                _fetch(f"http://localhost:{port}{path}")
            assert info.value.code == "url_not_allowed"


def test_redirects_are_followed_and_bounded() -> None:
    with serve({"/a.png": (200, {}, PNG), "/r1": (302, {"Location": "/a.png"}, b""),
                "/loop": (302, {"Location": "/loop"}, b"")}) as port:
        assert _fetch(f"http://localhost:{port}/r1") == PNG
        with pytest.raises(UnsafeURL):
            _fetch(f"http://localhost:{port}/loop")


def test_size_limit_from_header_and_from_body() -> None:
    with serve({"/big.png": (200, {}, b"x" * 200_000), "/endless": endless}) as port:
        with pytest.raises(UnsafeURL) as info:
            _fetch(f"http://localhost:{port}/big.png", max_bytes=100_000)
        assert info.value.status == 413
        began = time.monotonic()
        with pytest.raises(UnsafeURL) as info:
            _fetch(f"http://localhost:{port}/endless", max_bytes=1_000_000, timeout_s=5)
        assert info.value.status == 413 and time.monotonic() - began < 5


def test_a_server_that_never_answers_times_out() -> None:
    with serve({"/slow": silent}) as port:
        began = time.monotonic()
        with pytest.raises(UnsafeURL) as info:
            _fetch(f"http://localhost:{port}/slow", timeout_s=1.0)
        assert info.value.code == "url_timeout" and time.monotonic() - began < 5


def test_an_error_status_is_reported() -> None:
    with serve({}) as port:
        with pytest.raises(UnsafeURL) as info:
            _fetch(f"http://localhost:{port}/missing.png")
        assert "404" in info.value.message
