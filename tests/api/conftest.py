"""The API in this process, for the contract where a server process is not the point.

`app_client` is FastAPI's `TestClient` over `create_app(settings)` (its lifespan runs: Redis clients,
the cache, the registry), on the tests' real Redis and blob store: what it queues, the session
stack's workers run. Tests that need a real socket (keep-alive, a client hanging up, a body cut off
on the wire, several processes) use the stack's API process instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from vlmq.api.main import create_app
from vlmq.settings import Settings


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a bug answers 500 here as it would to a client, and the test sees it
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
