"""`vlmq up`: start and watch every process of a local vlmq, stop them all on Ctrl-C.

Processes: the API, one worker per registry model, Flower and the frontend (Redis is found or
started by `vlmq.cli.redis_server`). A worker that exits unexpectedly is restarted after a pause
(a model that failed to load, exit 3, is not: its error shows in `GET /v1/models`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from vlmq.fleet import EXIT_SETUP_FAILED

console = Console(stderr=True)


@dataclass
class Service:
    name: str
    argv: list[str]
    restart: bool = False
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    log_path: Path | None = None
    _log: object = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the process runs
        self.process = subprocess.Popen(
            self.argv, env=env, stdout=self._log or None, stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,
        )


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


class Supervisor:
    def __init__(self, services: list[Service], env: dict[str, str]) -> None:
        self.services = services
        self.env = env
        self.stopping = False

    def start_all(self) -> None:
        for service in self.services:
            service.start(self.env)

    def watch(self) -> None:
        """Until Ctrl-C or SIGTERM: restart what should be restarted."""
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        signal.signal(signal.SIGINT, lambda *_: self._request_stop())
        try:
            while not self.stopping:
                self._tick()
                time.sleep(0.5)
        finally:
            self.stop_all()

    def _request_stop(self) -> None:
        self.stopping = True

    def _tick(self) -> None:
        now = time.monotonic()
        for service in self.services:
            if service.done or service.process is None:
                continue
            code = service.process.poll()
            if code is None:
                continue
            if service.next_start == 0.0:
                if not service.restart or code == EXIT_SETUP_FAILED:
                    reason = "its model failed to load (see GET /v1/models)" if code == EXIT_SETUP_FAILED else ""
                    console.print(f"[red]{service.name} exited ({code}) {reason}[/red]")
                    service.done = True
                    continue
                service.restarts += 1
                delay = min(30.0, 2.0 ** min(service.restarts, 5))
                console.print(f"[yellow]{service.name} exited ({code}); restarting in {delay:.0f}s[/yellow]")
                service.next_start = now + delay
            elif now >= service.next_start:
                service.next_start = 0.0
                service.start(self.env)

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process group, wait up to `grace_s`, then SIGKILL what is left. A second
        Ctrl-C (or SIGTERM) while stopping must not leave orphans: it is ignored here."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        running = [s for s in self.services if s.process and s.process.poll() is None]
        for service in running:
            try:
                os.killpg(service.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for service in running:
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
