"""Several API processes on one port, each with a listening socket of its own (SO_REUSEPORT), so that
the kernel spreads new connections over the processes by their addresses.

uvicorn's own `--workers` gives the processes one shared socket: whichever process wakes first may
accept every connection pending (asyncio accepts up to its backlog per wake-up), so a client pool
opening 32 keep-alive connections at once could land all of them on one process, for good: two
processes ran at 0.99 cores in two of four loads (benchmarks/submit.py). With a socket per process
each gets its share.

The parent supervises: a process that dies is started again, unless it died in its first
`STARTUP_S` (the app cannot start: the parent stops with an error, as uvicorn does); SIGINT or SIGTERM
stops every process gracefully (uvicorn's shutdown: requests in flight finish). `vlmq api` first
checks that nothing else listens on the port (`port_free`: sockets that share a port would share it
with another server too). Where the platform has no load-balancing SO_REUSEPORT (not
Linux), uvicorn's `--workers` serves instead.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

log = logging.getLogger("vlmq.api")
APP = "vlmq.api.main:create_app"
STARTUP_S = 10.0
STOP_S = 30.0


def balanced() -> bool:
    """Whether the kernel spreads connections over sockets sharing a port (Linux's SO_REUSEPORT)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, address


def port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound by a socket that does not share it (nothing else listens there)."""
    family, address = _address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _serve(host: str, port: int) -> None:
    """One API process: its own socket on the shared port, then uvicorn on it."""
    import uvicorn

    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    config = uvicorn.Config(APP, factory=True, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


class ApiProcesses:
    def __init__(self, host: str, port: int, processes: int) -> None:
        self.host, self.port, self.count = host, port, processes
        self.context = multiprocessing.get_context("spawn")
        self.children: list[tuple[BaseProcess, float]] = []
        self.stopping = False

    def _start(self) -> tuple[BaseProcess, float]:
        child = self.context.Process(target=_serve, args=(self.host, self.port), name="vlmq-api")
        child.start()
        return child, time.monotonic()

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM (the caller checked `port_free`); the exit status (1: a process
        could not start)."""
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        self.children = [self._start() for _ in range(self.count)]
        status = 0
        while not self.stopping:
            time.sleep(0.25)
            for index, (child, began) in enumerate(self.children):
                if child.is_alive() or self.stopping:
                    continue
                if time.monotonic() - began < STARTUP_S:
                    log.error("an API process exited with %s at its start: stopping", child.exitcode)
                    self.stopping, status = True, 1
                    break
                log.warning("API process %s exited with %s: starting another", child.pid, child.exitcode)
                self.children[index] = self._start()
        for child, _ in self.children:
            if child.is_alive():
                child.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + STOP_S
        for child, _ in self.children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
        return status
