"""HTTP methods the routes do not declare themselves: HEAD, OPTIONS, and the `Allow` of a 405.

- `HEAD` on any path with a GET route answers what GET would, without the body (RFC 9110 §9.3.2).
- `OPTIONS` on a path answers 204 with `Allow` listing every method its routes serve.
- A 405 (a method no route of the path serves) carries the same `Allow`, not only the methods of
  the first route that matched the path, which is what Starlette's router gives.
"""

from __future__ import annotations

import contextlib
import re

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def route_table(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path regex, methods) of every route: the OpenAPI schema's operations, and the routes kept
    out of it (/metrics, /docs, ...)."""
    table = [(compile_path(path)[0], frozenset(m.upper() for m in item))
             for path, item in app.openapi().get("paths", {}).items()]
    for route in app.router.routes:
        if getattr(route, "path_regex", None) is not None and getattr(route, "methods", None):
            table.append((route.path_regex, frozenset(route.methods)))
    return table


def allowed_methods(declared: set[str]) -> list[str]:
    """What `Allow` lists for a path declaring `declared`: those, HEAD with GET, and OPTIONS."""
    if not declared:
        return []
    return sorted(declared | ({"HEAD"} if "GET" in declared else set()) | {"OPTIONS"})


class MethodHandling:
    def __init__(self, app: ASGIApp, routes_of: FastAPI) -> None:
        self.app = app
        self.routes_of = routes_of  # the FastAPI app, whose routes and schema say what is served
        self._table: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def declared(self, scope: Scope) -> set[str]:
        """The methods the routes of `scope`'s path declare."""
        if self._table is None:
            self._table = route_table(self.routes_of)
        path = scope["path"]
        return {m for regex, methods in self._table if regex.match(path) for m in methods}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in ("OPTIONS", "HEAD"):
            declared = self.declared(scope)
            if method == "OPTIONS" and declared and "OPTIONS" not in declared:
                allow = ", ".join(allowed_methods(declared)).encode()
                await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]})
                await send({"type": "http.response.body", "body": b""})
                return
            if method == "HEAD" and "GET" in declared and "HEAD" not in declared:
                with contextlib.suppress(_HeadDone):
                    await self.app({**scope, "method": "GET"}, receive, _without_body(send))
                return
        await self.app(scope, receive, self._fix_allow(scope, send))

    def _fix_allow(self, scope: Scope, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = ", ".join(allowed_methods(self.declared(scope))).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allowed)]}
            await send(message)

        return sending


class _HeadDone(Exception):
    """A HEAD response is complete: the GET handler's further body (a stream) is not wanted."""


def _without_body(send: Send) -> Send:
    """A HEAD response: GET's status and headers, an empty body; a streamed body stops at its first part."""
    done = False

    async def sending(message: Message) -> None:
        nonlocal done
        if message["type"] == "http.response.body":
            if done:
                raise _HeadDone
            done = True
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return sending
