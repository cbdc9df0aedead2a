"""The OpenAI Batch API under `/openai/v1`: files (`/files`) and batches (`/batches`), in OpenAI's
shapes, over vlmq's jobs (api/openai_files.py keeps files, api/openai_batches.py runs batches). Every
file and batch belongs to the key that made it: another key gets a 404."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vlmq.api.auth import spend
from vlmq.api.deps import CallerDep, ServicesDep
from vlmq.api.openai_batches import Batches
from vlmq.api.openai_files import Files
from vlmq.api.openai_shapes import OpenAIRoute

router = APIRouter(prefix="/openai/v1", tags=["openai"], route_class=OpenAIRoute)


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


# --- files --------------------------------------------------------------------------------------------


@router.post("/files")
async def upload_file(services: ServicesDep, caller: CallerDep, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form(max_length=64)]) -> dict[str, Any]:
    """Upload a batch input file (JSONL, streamed to the blob store; its lines checked on the way)."""
    await spend(caller, services)
    return (await Files(services).upload(caller.owner, file, purpose)).view()


@router.get("/files")
async def list_files(services: ServicesDep, caller: CallerDep, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                     order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> dict[str, Any]:
    records, more = await Files(services).page(caller.owner, after, limit, purpose, newest_first=order == "desc")
    return _page([r.view() for r in records], more)


@router.get("/files/{file_id}")
async def get_file(file_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return (await Files(services).get(caller.owner, file_id)).view()


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, services: ServicesDep, caller: CallerDep) -> StreamingResponse:
    """The file's bytes, streamed from the blob store."""
    return StreamingResponse(await Files(services).content(caller.owner, file_id), media_type="application/jsonl")


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    await Files(services).delete(caller.owner, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


# --- batches ------------------------------------------------------------------------------------------


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(..., max_length=128)
    endpoint: str = Field(..., max_length=128)
    completion_window: str = Field(..., max_length=16)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)


@router.post("/batches")
async def create_batch(body: BatchRequest, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Run a file's requests as bulk-lane jobs (api/openai_batches.py)."""
    await spend(caller, services)
    source = await Files(services).get(caller.owner, body.input_file_id)
    batch = await Batches(services).create(caller.owner, source, body.endpoint, body.completion_window, body.metadata)
    return batch.view()


@router.get("/batches")
async def list_batches(services: ServicesDep, caller: CallerDep, after: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    batches, more = await Batches(services).page(caller.owner, after, limit)
    return _page([b.view() for b in batches], more)


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return (await Batches(services).get(caller.owner, batch_id)).view()


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Stop a batch: its queued jobs are canceled, running ones stop at their next token."""
    return (await Batches(services).request_cancel(caller.owner, batch_id)).view()
