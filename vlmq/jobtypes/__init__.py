"""The job types vlmq serves, one module each: its `Params` and its `Output`.

Adding a job type: a module here (params, output) and the adapter method that runs it
(`tasks/adapters/`); the API, queues and workers find it through `PARAMS` and `OUTPUTS`.
"""

from __future__ import annotations

from pydantic import BaseModel

from vlmq.jobtypes.base import Decoding, JobType, Params
from vlmq.jobtypes.caption import CaptionOutput, CaptionParams
from vlmq.jobtypes.chat import ChatMessage, ChatOutput, ChatParams
from vlmq.jobtypes.compare import CompareOutput, CompareParams, ModelOutcome, TaskParams
from vlmq.jobtypes.detect import Box, DetectOutput, DetectParams
from vlmq.jobtypes.vqa import ScoredAnswer, VqaOutput, VqaParams

PARAMS: dict[JobType, type[Params]] = {
    JobType.caption: CaptionParams,
    JobType.vqa: VqaParams,
    JobType.detect: DetectParams,
    JobType.chat: ChatParams,
    JobType.compare: CompareParams,
}

OUTPUTS: dict[JobType, type[BaseModel]] = {
    JobType.caption: CaptionOutput,
    JobType.vqa: VqaOutput,
    JobType.detect: DetectOutput,
    JobType.chat: ChatOutput,
    JobType.compare: CompareOutput,
}

#: Job types whose text is produced token by token (streamable, cancellable between tokens).
GENERATIVE: frozenset[JobType] = frozenset({JobType.caption, JobType.chat})


def parse_params(data: dict) -> Params:
    """Params from their JSON form (as stored in a job record)."""
    return PARAMS[JobType(data["type"])].model_validate(data)


__all__ = [
    "GENERATIVE",
    "OUTPUTS",
    "PARAMS",
    "Box",
    "CaptionOutput",
    "CaptionParams",
    "ChatMessage",
    "ChatOutput",
    "ChatParams",
    "CompareOutput",
    "CompareParams",
    "Decoding",
    "DetectOutput",
    "DetectParams",
    "JobType",
    "ModelOutcome",
    "Params",
    "ScoredAnswer",
    "TaskParams",
    "VqaOutput",
    "VqaParams",
    "parse_params",
]
