"""Calibration for the submit-rate test: the same HTTP stack with no vlmq code behind it.

    python benchmarks/bare_api.py --port 8002

uvicorn (httptools, uvloop when installed, as `vlmq api` runs it) + FastAPI, one POST /v1/jobs
route that parses the JSON body into a pydantic model, decodes nothing, stores nothing, and answers
202 with a small JSON job. Whatever one API process cannot exceed on this machine with FastAPI,
before any Redis round trip or image work.
"""

from __future__ import annotations

import argparse
import uuid

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    model: str


class Job(BaseModel):
    id: str
    status: str
    model: str


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202, response_model=Job)
    async def submit(body: Body) -> Job:
        return Job(id=uuid.uuid4().hex, status="queued", model=body.model)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run("bare_api:create_app", factory=True, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)
