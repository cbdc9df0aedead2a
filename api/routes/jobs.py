"""/v1/jobs: submit a job, read it, fetch what it produced."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from vlmq.api.deps import RegistryDep, ServicesDep, SettingsDep, StoreDep
from vlmq.api.errors import ApiError
from vlmq.api.intake import load_image, read_submission
from vlmq.api.schemas import ErrorBody, JobView
from vlmq.api.submit import check_models, create_jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body or image too large."},
    415: {"model": ErrorBody, "description": "Neither JSON nor multipart."},
    422: {"model": ErrorBody, "description": "Invalid request; `error.field` names the field."},
    503: {"model": ErrorBody, "description": "Redis unreachable; retry after Retry-After seconds."},
}

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["request", "image"],
                    "properties": {
                        "request": {"type": "string", "description": "The job request as JSON, without image_url."},
                        "image": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    responses=ERRORS,
    openapi_extra=SUBMIT_BODY,
    summary="Submit a job",
)
async def submit_job(request: Request, response: Response, services: ServicesDep, settings: SettingsDep,
                     registry: RegistryDep) -> JobView:
    """Validate, store the image once by content, enqueue; answers at once with the job (202)."""
    job_request, upload = await read_submission(request, settings)
    check_models(job_request, registry)
    image, image_bytes = await run_in_threadpool(load_image, job_request.image_url, upload, settings)
    record = await run_in_threadpool(create_jobs, services, job_request, image, image_bytes)
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return JobView.of(record)


@router.get("/{job_id}", response_model=JobView, responses={404: {"model": ErrorBody}})
def get_job(job_id: str, store: StoreDep) -> JobView:
    record = store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired)", field="job_id")
    return JobView.of(record)


@router.get(
    "/{job_id}/annotated.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}},
)
def get_annotated(job_id: str, store: StoreDep) -> Response:
    """The detect job's image with its boxes and labels drawn."""
    data = store.get_artifact(job_id, "annotated.png")
    if data is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has no annotated image (not a finished detect job)")
    return Response(data, media_type="image/png")
