"""Where the running `vlmq up` is, so commands from a second shell find its Redis and its API.

`vlmq up` writes `VLMQ_DATA_DIR/run.json` (mode 0600: a Redis URL may hold a password) once it has
chosen its Redis and started its processes, and removes it when it stops::

    {"pid": 4242, "redis_url": "redis://127.0.0.1:40123/0", "api_url": "http://127.0.0.1:8000",
     "redis_sentinel_master": null, "started_at": 1767225600.0}

Every other `vlmq` command (run from the same folder, or with the same `VLMQ_DATA_DIR`) reads it
through `fill_environ` before its settings are built:

- explicit environment always wins: `VLMQ_REDIS_URL` set means the file's Redis is not used;
  `VLMQ_API_URL`, `VLMQ_API_HOST` or `VLMQ_API_PORT` set means the file's API URL is not used;
- a file whose pid is no longer a running vlmq process (`vlmq up` killed with SIGKILL, a reboot)
  is stale and ignored; so is a file that cannot be read or parsed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "run.json"
REDIS_VARS = ("VLMQ_REDIS_URL",)
API_VARS = ("VLMQ_API_URL", "VLMQ_API_HOST", "VLMQ_API_PORT")


@dataclass(frozen=True)
class RunState:
    pid: int
    redis_url: str
    api_url: str
    redis_sentinel_master: str | None = None
    started_at: float = 0.0


def path_in(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def write(data_dir: Path, redis_url: str, api_url: str, redis_sentinel_master: str | None = None) -> Path:
    """Record this process as the running `vlmq up` of `data_dir` (atomically: readers never see half a file)."""
    path = path_in(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = RunState(os.getpid(), redis_url, api_url, redis_sentinel_master, time.time())
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle)
    os.replace(partial, path)
    return path


def remove(data_dir: Path) -> None:
    """Remove the file if this process wrote it (a later `vlmq up`'s file is left alone)."""
    path = path_in(data_dir)
    state = _load(path)
    if state is not None and state.pid == os.getpid():
        path.unlink(missing_ok=True)


def _load(path: Path) -> RunState | None:
    try:
        raw = json.loads(path.read_text())
        return RunState(
            pid=int(raw["pid"]),
            redis_url=str(raw["redis_url"]),
            api_url=str(raw["api_url"]),
            redis_sentinel_master=raw.get("redis_sentinel_master"),
            started_at=float(raw.get("started_at", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def is_running(pid: int) -> bool:
    """Whether `pid` is a live vlmq process (not merely a live pid: pids are reused)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists, and we cannot look closer
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True  # no procfs (macOS): the pid is all we can check
    try:
        return b"vlmq" in cmdline.read_bytes()  # empty for a zombie
    except OSError:
        return False


def read(data_dir: Path) -> RunState | None:
    """The running `vlmq up` of `data_dir`, or None (no file, an unreadable one, or a stale one)."""
    state = _load(path_in(data_dir))
    if state is None or not is_running(state.pid):
        return None
    return state


def fill_environ(environ: MutableMapping[str, str], data_dir: Path) -> tuple[RunState | None, list[str]]:
    """Set, in `environ`, the Redis and API of the running `vlmq up` where not set explicitly.

    Returns (the state found or None, the variables it set)."""
    state = read(data_dir)
    if state is None:
        return None, []
    present = {name.upper() for name in environ}
    filled = []
    if not present.intersection(REDIS_VARS):
        environ["VLMQ_REDIS_URL"] = state.redis_url
        filled.append("VLMQ_REDIS_URL")
        if state.redis_sentinel_master and "VLMQ_REDIS_SENTINEL_MASTER" not in present:
            environ["VLMQ_REDIS_SENTINEL_MASTER"] = state.redis_sentinel_master
            filled.append("VLMQ_REDIS_SENTINEL_MASTER")
    if not present.intersection(API_VARS):
        environ["VLMQ_API_URL"] = state.api_url
        filled.append("VLMQ_API_URL")
    return state, filled
