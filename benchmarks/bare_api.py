"""Calibration for the submit-rate benchmark: the same HTTP stack with less and less behind it.

    python benchmarks/bare_api.py --port 8002 --redis-url redis://127.0.0.1:6379/9 --queue bench.bare

uvicorn (httptools, uvloop, as `vlmq api` runs it) + FastAPI, three POST routes that parse the JSON
body into a pydantic model (and its data URI image into bytes) and answer 202 with a small JSON job:

- `/bare/accept`: nothing else. What one API process cannot exceed on this machine with FastAPI.
- `/bare/redis`: plus one Redis write of the request (an async LPUSH): the least a submit that
  keeps anything must do.
- `/bare/send_task`: plus Celery's `send_task` of a task message to a queue (in the thread pool, as
  a FastAPI app publishing through Celery does): the usual way to build such a service.
"""

from __future__ import annotations

import argparse
import base64
import uuid

import redis.asyncio as aioredis
from celery import Celery
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    model: str
    image_url: str


class Job(BaseModel):
    id: str
    status: str
    model: str


def create_app(redis_url: str, queue: str) -> FastAPI:
    app = FastAPI()
    client = aioredis.Redis.from_url(redis_url)
    celery = Celery("bare", broker=redis_url, set_as_current=False)

    def image(body: Body) -> bytes:
        return base64.b64decode(body.image_url.split(",", 1)[1])

    @app.post("/bare/accept", status_code=202, response_model=Job)
    async def accept(body: Body) -> Job:
        image(body)
        return Job(id=uuid.uuid4().hex, status="queued", model=body.model)

    @app.post("/bare/redis", status_code=202, response_model=Job)
    async def to_redis(body: Body) -> Job:
        job = Job(id=uuid.uuid4().hex, status="queued", model=body.model)
        await client.lpush(queue + ".redis", image(body))
        return job

    @app.post("/bare/send_task", status_code=202, response_model=Job)
    async def send_task(body: Body) -> Job:
        job = Job(id=uuid.uuid4().hex, status="queued", model=body.model)
        image(body)
        await run_in_threadpool(celery.send_task, "bare.task", args=[job.id], task_id=job.id, queue=queue)
        return job

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--queue", default="bench.bare")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(create_app(args.redis_url, args.queue), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)
