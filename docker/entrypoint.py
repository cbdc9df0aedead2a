#!/usr/bin/env python3
"""Entrypoint of vlmq's images (installed as ``vlmq-entrypoint``): runs the container's command.

Any command (``vlmq api``, ``vlmq webhooks``, ``vlmq demo build``, a shell) is exec'd as it is,
except a model worker, ``vlmq worker --model NAME``: that one runs as a child process so that its
exit status can be read. A worker whose model cannot load reports the error to Redis (shown by
``GET /v1/models``) and exits with status 3, which no supervisor should restart; compose restarts
workers ``on-failure``, and Docker cannot exempt one status, so status 3 becomes a clean exit 0
here, after a line on stderr saying why. Any other status is passed on as it is (a crash or an OOM
kill still restarts the worker). SIGTERM, SIGINT, SIGQUIT and SIGHUP are passed on to the worker:
SIGTERM is Celery's warm shutdown (the batch in hand finishes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

#: vlmq.fleet.EXIT_SETUP_FAILED (not imported: this script must run before anything else does).
EXIT_SETUP_FAILED = 3
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def is_worker(argv: list[str]) -> bool:
    return len(argv) >= 2 and os.path.basename(argv[0]) == "vlmq" and argv[1] == "worker"


def run_worker(argv: list[str]) -> int:
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not started:  # before the worker exists: passed on as soon as it does
            pending.append(signum)
            return
        try:
            started[0].send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:  # first: a signal between the spawn and these lines would kill this process
        signal.signal(sig, forward)
    child = subprocess.Popen(argv)
    started.append(child)
    for signum in pending:
        child.send_signal(signum)
    status = child.wait()
    if status == EXIT_SETUP_FAILED:
        sys.stderr.write(
            f"vlmq-entrypoint: {' '.join(argv)} exited with status {EXIT_SETUP_FAILED}: its model failed to "
            "load (the reason is in the log above and in GET /v1/models). Exiting 0 so that Docker does not "
            "restart it; fix the model, then `docker compose up -d <service>`.\n"
        )
        return 0
    return 128 - status if status < 0 else status  # killed by signal N: 128 + N, as a shell reports it


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: vlmq-entrypoint COMMAND [ARG...]\n")
        return 2
    if is_worker(argv):
        return run_worker(argv)
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
