"""The model registry: which models exist, how each is loaded and which job types it runs.

Read from one TOML file (`VLMQ_MODELS_FILE`, default `vlmq/models.toml`), with per-model JSON
overrides from `VLMQ_MODELS`, plus one model per `checkpoint-<step>` folder of each checkpoint
group. Sources are hub ids (`Salesforce/blip-image-captioning-base`), local folders, or
`demo:<name>`, a tiny random-weight model that `vlmq demo build` writes under the data dir.

Example entry::

    [models.blip-base]
    adapter = "blip_caption"          # tasks/adapters/blip_caption.py
    source = "demo:blip-base"         # or "Salesforce/blip-image-captioning-base"
    tasks = ["caption"]
    dtype = "auto"                    # auto | float32 | float16 | bfloat16
    max_batch_size = 8

    [checkpoints.llava-ft]            # registers llava-ft@100, llava-ft@200, ... sorted by step
    dir = "demo:llava-ft"
    adapter = "image_text_to_text"
    tasks = ["chat", "caption"]

    [groups.llava-ft]                 # served by group workers that load members on demand
    checkpoints = "llava-ft"          # every model of [checkpoints.llava-ft]; or models = ["a", "b"]
    max_loaded = 4                    # members one group worker holds at once (least recently used goes)
    max_memory_gb = 12                # and/or a budget for their weights
    workers = 1                       # group workers `vlmq up` starts

Per-model JSON overrides come from `VLMQ_MODELS`, per-group ones from `VLMQ_GROUPS`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlmq.jobtypes import JOB_TYPES, JobType
from vlmq.settings import Settings

DEFAULT_REGISTRY = Path(__file__).with_name("models.toml")
DEMO_PREFIX = "demo:"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RegistryError(ValueError):
    """The registry file or an override is wrong: raised at start-up, never mid-job."""


class ModelSpec(BaseModel):
    """One model as the registry describes it. Frozen: a worker's model never changes under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    adapter: str = Field(..., description="Module in tasks/adapters/ that wraps this model family.")
    source: str = Field(..., description="Hub id, local folder, or demo:<name>.")
    tasks: tuple[JobType, ...]
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: Literal["8bit", "4bit"] | None = None
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    max_batch_size: int = Field(8, ge=1, le=256)
    max_wait_ms: int = Field(
        200, ge=0, le=10_000,
        description="Longest a partial batch waits for more jobs while more are queued (a cap: an idle worker "
        "runs a lone job after 2% of its recent batch time).",
    )
    queue_limit: int = Field(10_000, ge=1, description="Queued jobs past which submits get 429.")
    description: str = ""
    checkpoint_step: int | None = Field(None, description="Set for models found as checkpoint-<step>.")
    mask_decoder: str | None = Field(
        None, description="PaliGemma's segmentation VQ-VAE weights (big_vision's vae-oid.npz), which `segment` "
        "needs: a path; a relative one is inside the model's own folder.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"model name {value!r}: lowercase letters, digits, '.', '_', '-', '@'")
        return value

    @field_validator("tasks")
    @classmethod
    def _runnable_tasks(cls, value: tuple[JobType, ...]) -> tuple[JobType, ...]:
        if not value:
            raise ValueError("a model runs at least one task")
        for task in value:
            if JOB_TYPES[task].fan_out:
                raise ValueError(f"{task} is not a model task: it fans out to models")
        return value

    @model_validator(mode="after")
    def _source_given(self) -> ModelSpec:
        if not self.source:
            raise ValueError("source is empty")
        if "segment" in self.tasks and not self.mask_decoder:
            raise ValueError("segment needs mask_decoder (the path of PaliGemma's vae-oid.npz)")
        return self

    @property
    def is_demo(self) -> bool:
        return self.source.startswith(DEMO_PREFIX)

    def resolved_source(self, settings: Settings) -> str:
        """What `from_pretrained` gets: a demo model's folder, else the source as written."""
        if self.is_demo:
            return str(settings.demo_models_dir / self.source[len(DEMO_PREFIX) :])
        return self.source


class GroupSpec(BaseModel):
    """A model group: members that group workers load on demand (tasks/group_worker.py), at most
    `max_loaded` of them at once per worker and, with `max_memory_gb`, weights within that budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    members: tuple[str, ...] = Field(..., description="Registry models, from `checkpoints` or `models`.")
    max_loaded: int = Field(4, ge=1, le=1024, description="Members one group worker holds at once.")
    max_memory_gb: float | None = Field(None, gt=0, description="Budget for one group worker's weights.")
    workers: int = Field(1, ge=0, le=64, description="Group workers `vlmq up` starts.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value) or "@" in value:
            raise ValueError(f"group name {value!r}: lowercase letters, digits, '.', '_', '-'")
        return value

    @property
    def max_memory_bytes(self) -> int | None:
        return int(self.max_memory_gb * 1024**3) if self.max_memory_gb else None


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec]
    groups: dict[str, GroupSpec] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.models.values())

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}") from None

    def for_task(self, task: JobType) -> list[ModelSpec]:
        return [m for m in self.models.values() if task in m.tasks]

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def group_of(self, model: str) -> str | None:
        """The first group that has `model` as a member."""
        return next((g.name for g in self.groups.values() if model in g.members), None)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(merged.get(key), dict) and isinstance(
            value, dict
        ) else value
    return merged


def _resolve_dir(raw: str, settings: Settings) -> Path:
    if raw.startswith(DEMO_PREFIX):
        return settings.demo_models_dir / raw[len(DEMO_PREFIX) :]
    return Path(raw).expanduser()


def discover_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """`checkpoint-<step>` sub-folders of `folder`, sorted by step (numerically)."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def load_registry(settings: Settings) -> Registry:
    path = settings.models_file or DEFAULT_REGISTRY
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
    unknown = set(raw) - {"models", "checkpoints", "groups"}
    if unknown:
        raise RegistryError(f"{path}: unknown sections {sorted(unknown)}")

    entries: dict[str, dict] = {name: dict(body) for name, body in raw.get("models", {}).items()}
    checkpoints: dict[str, list[str]] = {}
    for group, body in raw.get("checkpoints", {}).items():
        body = dict(body)
        folder = _resolve_dir(str(body.pop("dir", "")), settings)
        checkpoints[group] = []
        for step, ckpt in discover_checkpoints(folder):
            entries[f"{group}@{step}"] = {**body, "source": str(ckpt), "checkpoint_step": step}
            checkpoints[group].append(f"{group}@{step}")
    for name, override in settings.models.items():
        entries[name] = _deep_merge(entries.get(name, {}), override)

    models: dict[str, ModelSpec] = {}
    for name, body in entries.items():
        try:
            models[name] = ModelSpec(name=name, **body)
        except (ValidationError, TypeError) as exc:
            raise RegistryError(f"model {name!r} in {path}: {exc}") from exc
    groups = {name: dict(body) for name, body in raw.get("groups", {}).items()}
    for name, override in settings.groups.items():
        groups[name] = _deep_merge(groups.get(name, {}), override)
    return Registry(models, {name: _group(name, body, checkpoints, models, path) for name, body in groups.items()})


def _group(name: str, body: dict, checkpoints: dict[str, list[str]], models: dict[str, ModelSpec],
           path: Path | str) -> GroupSpec:
    """A `[groups.<name>]` entry: exactly one of `checkpoints` (a `[checkpoints.*]` name) or `models`."""
    body = dict(body)
    folder, listed = body.pop("checkpoints", None), body.pop("models", None)
    if (folder is None) == (listed is None):
        raise RegistryError(f"group {name!r} in {path}: give exactly one of checkpoints or models")
    if folder is not None:
        if folder not in checkpoints:
            raise RegistryError(f"group {name!r} in {path}: no [checkpoints.{folder}] section")
        members = checkpoints[folder]
    else:
        members = list(listed) if isinstance(listed, list) else []
        unknown = [m for m in members if m not in models]
        if not members or unknown:
            raise RegistryError(f"group {name!r} in {path}: models must name registry models "
                                f"(unknown: {', '.join(map(repr, unknown)) or 'none given'})")
    try:
        return GroupSpec(name=name, members=tuple(members), **body)
    except (ValidationError, TypeError) as exc:
        raise RegistryError(f"group {name!r} in {path}: {exc}") from exc
