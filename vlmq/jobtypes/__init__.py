"""The job types vlmq serves: one module each, found here.

Each module of this package (but `base`) declares `JOB_TYPE = JobTypeSpec(...)` (see base.py).
Everything that lists job types is derived from `JOB_TYPES`: the `JobType` enum, the API's request
union (vlmq/jobs.py), compare's task union, the cache's semantic types, the CLI's choices, the
artifact route and the frontend's tabs. Adding a job type: its module here, and the adapter method
that runs it (tasks/adapters/).
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum
from typing import Annotated, Union

from pydantic import BaseModel, Field

from vlmq.jobtypes.base import Decoding, FanOutParams, GenerativeParams, JobTypeSpec, Params, WithArtifacts


def _discover() -> dict[str, JobTypeSpec]:
    found: list[JobTypeSpec] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "JOB_TYPE", None)
        if not isinstance(spec, JobTypeSpec):
            raise TypeError(f"vlmq.jobtypes.{info.name} declares no JOB_TYPE (a JobTypeSpec)")
        _check(spec, info.name)
        found.append(spec)
    return {spec.name: spec for spec in sorted(found, key=lambda s: (s.order, s.name))}


def _check(spec: JobTypeSpec, module: str) -> None:
    """A job-type module that contradicts itself is an import error, not a surprise at the first job."""
    problems = []
    if spec.name != module:
        problems.append(f"its name {spec.name!r} is not its module's")
    declared = spec.params.model_fields["type"].default
    if declared != spec.name:
        problems.append(f"its params' type defaults to {declared!r}")
    question = spec.params.question_field
    if question is not None and question not in spec.params.model_fields:
        problems.append(f"its question field {question!r} is not a field of its params")
    if spec.fan_out != issubclass(spec.params, FanOutParams):
        problems.append("fan_out must be declared exactly when its params are FanOutParams")
    if spec.artifacts is not None and "artifacts" not in spec.output.model_fields:
        problems.append("it declares artifacts but its output has no `artifacts` field (WithArtifacts)")
    if problems:
        raise TypeError(f"job type {module}: " + "; ".join(problems))


#: Every job type, in `order`.
JOB_TYPES: dict[str, JobTypeSpec] = _discover()
JobType = StrEnum("JobType", {name: name for name in JOB_TYPES})
JobType.__doc__ = "The job types (derived from the modules of vlmq.jobtypes)."

PARAMS: dict[str, type[Params]] = {name: spec.params for name, spec in JOB_TYPES.items()}
OUTPUTS: dict[str, type[BaseModel]] = {name: spec.output for name, spec in JOB_TYPES.items()}
#: The types that run on one model (a fan-out's task is one of them).
MODEL_TYPES: tuple[str, ...] = tuple(name for name, spec in JOB_TYPES.items() if not spec.fan_out)
#: Types whose free text may be answered from a paraphrase (the semantic cache tier).
SEMANTIC: frozenset[str] = frozenset(name for name, spec in JOB_TYPES.items() if spec.semantic)
#: A fan-out's `task`: the params of any type that runs on one model.
TaskParams = Annotated[Union[tuple(PARAMS[name] for name in MODEL_TYPES)], Field(discriminator="type")]  # noqa: UP007
for _spec in JOB_TYPES.values():
    _spec.params.model_rebuild(_types_namespace={"TaskParams": TaskParams})


def job_type(name: str) -> JobTypeSpec:
    """The spec of a job type; KeyError for an unknown name."""
    return JOB_TYPES[str(name)]


def parse_params(data: dict) -> Params:
    """Params from their JSON form (as stored in a job record)."""
    return PARAMS[data["type"]].model_validate(data)


__all__ = [
    "JOB_TYPES",
    "MODEL_TYPES",
    "OUTPUTS",
    "PARAMS",
    "SEMANTIC",
    "Decoding",
    "FanOutParams",
    "GenerativeParams",
    "JobType",
    "JobTypeSpec",
    "Params",
    "TaskParams",
    "WithArtifacts",
    "job_type",
    "parse_params",
]
