#!/usr/bin/env python3
"""Container health checks for vlmq's services (docker-compose.yml runs them; exit 0 = healthy).

Installed in both images as ``vlmq-healthcheck``:

    vlmq-healthcheck http URL        URL answers 2xx: the API's /readyz (503 while Redis is away),
                                     Flower's /healthcheck, the frontend's /
    vlmq-healthcheck worker MODEL    a worker for MODEL in *this* container (Celery node name
                                     ``MODEL@<hostname>-<pid>``) heartbeats into Redis as ``ready``
                                     (vlmq/fleet.py); ``loading`` while weights load is not healthy yet
    vlmq-healthcheck group GROUP     a group worker of GROUP in *this* container (``GROUP@<hostname>-<pid>``)
                                     heartbeats into Redis (it announces itself once warmed up)
    vlmq-healthcheck celery NAME     the Celery node ``NAME@<hostname>`` (the webhook worker:
                                     ``webhooks``) answers a broadcast ping

The worker check reads the heartbeat rather than pinging Celery: a model worker runs the solo
pool and does not answer control messages while a batch is running, but its heartbeat thread
does. Nothing here calls the ``vlmq`` CLI; Redis is reached as vlmq reaches it (VLMQ_REDIS_URL).
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def check_http(url: str) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def check_worker(model: str, hostname: str | None = None) -> tuple[bool, str]:
    from vlmq.fleet import ONLINE_S
    from vlmq.keyspace import WORKER, WORKERS
    from vlmq.redis_conn import sync_client
    from vlmq.settings import Settings

    prefix = f"{model}@{hostname or socket.gethostname()}-"
    client = sync_client(Settings())
    names = client.zrangebyscore(WORKERS.format(model), time.time() - ONLINE_S, "+inf")
    mine = [n.decode() if isinstance(n, bytes) else n for n in names]
    mine = [n for n in mine if n.startswith(prefix)]
    if not mine:
        return False, f"no recent heartbeat from a {model} worker named {prefix}*"
    states = {}
    for name in mine:
        state = client.hget(WORKER.format(name), "state")
        states[name] = state.decode() if isinstance(state, bytes) else state
        if states[name] == "ready":
            return True, f"{name}: ready"
    return False, ", ".join(f"{name}: {state or 'gone'}" for name, state in states.items())


def check_group(group: str, hostname: str | None = None) -> tuple[bool, str]:
    from vlmq.fleet import Fleet
    from vlmq.redis_conn import sync_client
    from vlmq.settings import Settings

    prefix = f"{group}@{hostname or socket.gethostname()}-"
    workers = Fleet(sync_client(Settings())).describe_groups([group])[group]
    mine = [w for w in workers if w.name.startswith(prefix)]
    if not mine:
        return False, f"no recent heartbeat from a {group} group worker named {prefix}*"
    held = ", ".join(h.model for h in mine[0].held) or "nothing yet"
    return True, f"{mine[0].name}: up, holds {held}"


def check_celery(node_prefix: str, hostname: str | None = None) -> tuple[bool, str]:
    from vlmq.settings import Settings
    from vlmq.tasks.app import make_celery

    node = f"{node_prefix}@{hostname or socket.gethostname()}"
    app = make_celery(Settings())
    try:
        replies = app.control.ping(destination=[node], timeout=TIMEOUT_S)
    finally:
        app.close()
    ok = any(node in reply for reply in replies or [])
    return ok, f"{node}: {'pong' if ok else 'no reply'}"


CHECKS = {"http": check_http, "worker": check_worker, "group": check_group, "celery": check_celery}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CHECKS:
        sys.stderr.write(__doc__ or "")
        return 2
    try:
        ok, detail = CHECKS[argv[0]](argv[1])
    except Exception as exc:  # noqa: BLE001 - any failure to check is "unhealthy", with the reason
        ok, detail = False, f"{exc.__class__.__name__}: {exc}"
    print(("healthy: " if ok else "unhealthy: ") + detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
