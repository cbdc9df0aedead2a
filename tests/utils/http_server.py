"""A local HTTP server for URL-fetch tests: images, redirects, slow and endless responses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Routes(dict):
    """path -> (status, headers, body | callable(handler))."""


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_response(404)
                self.end_headers()
                return
            if callable(route):
                route(self)
                return
            status, headers, body = route
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    return Handler


@contextmanager
def serve(routes: Routes) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def endless(handler: BaseHTTPRequestHandler) -> None:
    """Streams bytes until the client goes away (bounded to 60 s)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    stop = time.monotonic() + 60
    try:
        while time.monotonic() < stop:
            handler.wfile.write(b"\0" * 65536)
            time.sleep(0.01)
    except OSError:
        pass


def silent(handler: BaseHTTPRequestHandler) -> None:
    """Accepts, then never answers (bounded to 30 s)."""
    time.sleep(30)
