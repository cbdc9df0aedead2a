"""The job: its statuses, the request a client sends, and the record the store keeps.

One `JobStatus` enum serves the API, the workers, the client and the frontend; docs/api.md lists
the same values and a test holds the two together.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from vlmq.jobtypes import JOB_TYPES, JobType, Params, parse_params


class JobStatus(StrEnum):
    queued = "queued"  # accepted, waiting for a worker of its model
    running = "running"  # a worker took it (attempts counts deliveries)
    succeeded = "succeeded"  # output is set
    failed = "failed"  # error is set; never cached
    canceled = "canceled"  # canceled by a client, or its deadline passed while it ran
    aborted = "aborted"  # its deadline passed before it started: it never reached a model

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.aborted})


class CacheOutcome(StrEnum):
    hit = "hit"  # same scope, same normalised question: answered at the API
    semantic_hit = "semantic_hit"  # a paraphrase of a question answered for the same scope
    joined = "joined"  # the same request was queued or running: this job shares its result
    miss = "miss"  # ran on a model
    off = "off"  # the request opted out (cache: false), or the job type is not cacheable


class Lane(StrEnum):
    interactive = "interactive"
    bulk = "bulk"


# --- requests (the API's edge) -------------------------------------------------------------


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image_url: str | None = Field(
        None,
        max_length=16 * 1024 * 1024,
        description="http(s) URL of the image, or a `data:image/...;base64,` URI. "
        "Multipart submits send the file instead.",
    )
    cache: bool = Field(True, description="false: never answer from the cache, always run the model.")
    priority: Lane | None = Field(
        None, description="Lane: interactive (default for a single job) or bulk (default in a batch)."
    )
    webhook: str | None = Field(
        None, max_length=2048, description="http(s) URL that receives signed POSTs about this job."
    )
    webhook_events_filter: list[Literal["start", "output", "completed"]] = Field(
        default_factory=lambda: ["completed"], max_length=3, description="Which events the webhook gets."
    )
    cancel_after: float | None = Field(
        None, gt=0, le=7 * 86_400,
        description="Deadline, seconds after submission: not started by then, the job ends aborted; "
        "started but not finished, canceled. The Cancel-After header does the same.",
    )


class _OneModel(_Common):
    model: str = Field(..., min_length=1, max_length=64)


def _request_model(name: str) -> type[BaseModel]:
    """A job type's request: its params, and the model (for a type that runs on one), image and options."""
    spec = JOB_TYPES[name]
    base = _Common if spec.fan_out else _OneModel
    return create_model(f"{spec.title.capitalize()}Request", __base__=(base, spec.params), __module__=__name__)


#: The request model of each job type (pydantic names them `CaptionRequest`, `VqaRequest`, ...).
REQUESTS: dict[str, type[BaseModel]] = {name: _request_model(name) for name in JOB_TYPES}
JobRequest = Annotated[Union[tuple(REQUESTS.values())], Field(discriminator="type")]  # noqa: UP007

_COMMON_FIELDS = frozenset(_OneModel.model_fields)


def request_params(request: BaseModel) -> Params:
    """The job type's params of a request: everything but model, image and delivery options."""
    data = request.model_dump(mode="json", exclude=set(_COMMON_FIELDS))
    return parse_params(data)


# --- the record (inside) ------------------------------------------------------------------


def now() -> float:
    return time.time()


def new_job_id() -> str:
    return uuid.uuid4().hex


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else None


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: one Redis hash (see vlmq/store.py). Frozen: a change is a new record."""

    id: str
    type: JobType
    status: JobStatus
    params: dict[str, Any]
    model: str | None = None
    image: str | None = None  # content hash: the key of the stored image
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    parent: str | None = None
    children: dict[str, str] = field(default_factory=dict)  # a fan-out (vlmq/fanout.py): model -> child job id
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # a fan-out: model -> outcome
    cache: CacheOutcome = CacheOutcome.miss
    cached_from: str | None = None
    owner: str | None = None
    lane: Lane = Lane.interactive
    deadline: float | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()
    worker: str | None = None
    cancel_reason: str | None = None
    batch: str | None = None  # an OpenAI-style batch's id: its final status is counted there
    load_wait_ms: float | None = None  # queued while its model's weights loaded: for how long

    @property
    def queue_ms(self) -> float | None:
        return round((self.started_at - self.created_at) * 1000, 2) if self.started_at else None

    @property
    def run_ms(self) -> float | None:
        if self.started_at and self.completed_at:
            return round((self.completed_at - self.started_at) * 1000, 2)
        return None

    def to_hash(self) -> dict[str, str]:
        """The Redis hash fields of a new record (None fields are left out; the id is the key's)."""
        fields: dict[str, Any] = {
            "type": self.type.value,
            "status": self.status.value,
            "params": json.dumps(self.params, separators=(",", ":")),
            "model": self.model,
            "image": self.image,
            "created_at": repr(self.created_at),
            "started_at": repr(self.started_at) if self.started_at else None,
            "completed_at": repr(self.completed_at) if self.completed_at else None,
            "attempts": str(self.attempts),
            "output": json.dumps(self.output) if self.output is not None else None,
            "error": json.dumps(self.error) if self.error is not None else None,
            "parent": self.parent,
            "children": json.dumps(self.children) if self.children else None,
            "cache": self.cache.value,
            "cached_from": self.cached_from,
            "owner": self.owner,
            "lane": self.lane.value,
            "deadline": repr(self.deadline) if self.deadline else None,
            "webhook": self.webhook,
            "webhook_events": ",".join(self.webhook_events) if self.webhook_events else None,
            "batch": self.batch,
        }
        return {k: v for k, v in fields.items() if v is not None}

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> JobRecord:
        def num(key: str) -> float | None:
            return float(raw[key]) if raw.get(key) else None

        def obj(key: str) -> Any:
            return json.loads(raw[key]) if raw.get(key) else None

        outcomes = {k[len("outcome:") :]: json.loads(v) for k, v in raw.items() if k.startswith("outcome:")}
        return cls(
            id=job_id,
            type=JobType(raw["type"]),
            status=JobStatus(raw["status"]),
            params=obj("params") or {},
            model=raw.get("model"),
            image=raw.get("image"),
            created_at=float(raw.get("created_at", 0)),
            started_at=num("started_at"),
            completed_at=num("completed_at"),
            attempts=int(raw.get("attempts", 0)),
            output=obj("output"),
            error=obj("error"),
            parent=raw.get("parent"),
            children=obj("children") or {},
            outcomes=outcomes,
            cache=CacheOutcome(raw.get("cache", "miss")),
            cached_from=raw.get("cached_from"),
            owner=raw.get("owner"),
            lane=Lane(raw.get("lane", "interactive")),
            deadline=num("deadline"),
            webhook=raw.get("webhook"),
            webhook_events=tuple(x for x in raw.get("webhook_events", "").split(",") if x),
            worker=raw.get("worker"),
            cancel_reason=raw.get("cancel_reason"),
            batch=raw.get("batch"),
            load_wait_ms=num("load_wait_ms"),
        )
