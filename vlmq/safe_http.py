"""Outbound HTTP to addresses that clients chose (image URLs, webhooks), kept off the inside network.

Rules, checked again at every redirect:
- http and https only;
- the host is resolved once and *every* address it resolves to must be public
  (`ipaddress.is_global`: no loopback, private, link-local / cloud metadata, CGNAT, multicast,
  reserved, IPv4-mapped tricks), unless the host or address is in `url_allow_hosts`;
- the connection goes to the address that was checked (the host name rides in the Host header
  and TLS SNI), so a name cannot resolve to a public address for the check and a private one
  for the request;
- a size limit (Content-Length is refused up front, the body is counted as it arrives) and one
  deadline for the whole exchange, so a server that never answers or streams forever is cut off.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from vlmq.errors import InputError

_REDIRECTS = {301, 302, 303, 307, 308}


class UnsafeURL(InputError):
    """The URL is refused or its fetch failed; `code` and `status` are the API's error."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL  # with the checked address in place of the host
    host: str
    address: str


def _allowed(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: list[str]) -> bool:
    for entry in allow:
        if entry == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str, allow: list[str], field: str = "image_url") -> Target:
    """Resolve and check `url`; return where to connect. Raises `UnsafeURL`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL("invalid_url", f"{field}: not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("url_not_allowed", f"{field}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise UnsafeURL("invalid_url", f"{field}: the URL has no host")
    if parts.username or parts.password:
        raise UnsafeURL("url_not_allowed", f"{field}: URLs with credentials are not fetched")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL("url_unreachable", f"{field}: the host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for address in addresses:
        if not _public(address) and not _allowed(host, address, allow):
            raise UnsafeURL(
                "url_not_allowed",
                f"{field}: {host} resolves to {address}, which is not a public address",
            )
    address = str(addresses[0])
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    target = httpx.URL(url).copy_with(netloc=netloc.encode())
    return Target(url=target, host=host, address=address)


def pinned_request(client: httpx.Client, method: str, url: str, target: Target, **kwargs) -> httpx.Request:
    """A request for `url` sent to the checked address, with the real host in Host and TLS SNI."""
    port = urlsplit(url).port
    headers = {**kwargs.pop("headers", {}), "Host": target.host if port is None else f"{target.host}:{port}"}
    return client.build_request(method, target.url, headers=headers, extensions={"sni_hostname": target.host},
                                **kwargs)


def fetch(
    url: str,
    *,
    allow: list[str],
    max_bytes: int,
    timeout_s: float,
    max_redirects: int,
    field: str = "image_url",
) -> bytes:
    """GET `url` under the rules above and return the body."""
    deadline = time.monotonic() + timeout_s
    current = url
    with httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)), trust_env=False) as client:
        for _ in range(max_redirects + 1):
            target = check_url(current, allow, field)
            request = pinned_request(client, "GET", current, target,
                                     headers={"User-Agent": "vlmq/0.1", "Accept": "image/*"})
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise UnsafeURL("url_timeout", f"{field}: the server did not answer in time", 422) from exc
            except httpx.HTTPError as exc:
                raise UnsafeURL("url_unreachable", f"{field}: cannot fetch: {exc.__class__.__name__}") from exc
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise UnsafeURL("url_unreachable", f"{field}: the server answered {response.status_code}")
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise UnsafeURL(
                        "image_too_large", f"{field}: the image is {length} bytes; at most {max_bytes}", 413
                    )
                return _read_limited(response, max_bytes, deadline, field)
            finally:
                response.close()
    raise UnsafeURL("url_unreachable", f"{field}: more than {max_redirects} redirects")


def _read_limited(response: httpx.Response, max_bytes: int, deadline: float, field: str) -> bytes:
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise UnsafeURL("image_too_large", f"{field}: the image is larger than {max_bytes} bytes", 413)
            if time.monotonic() > deadline:
                raise UnsafeURL("url_timeout", f"{field}: the download took too long")
            chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise UnsafeURL("url_timeout", f"{field}: the server stopped sending") from exc
    except httpx.HTTPError as exc:
        raise UnsafeURL("url_unreachable", f"{field}: the download broke off: {exc.__class__.__name__}") from exc
    return b"".join(chunks)
