"""All of vlmq's settings, in one object, read from `VLMQ_*` environment variables.

Every process (API, worker, frontend, CLI) reads the same `Settings`; nothing else reads the
environment. `get_settings()` caches one instance per process; tests build their own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLMQ_", env_nested_delimiter="__", extra="ignore")

    # --- where things are -------------------------------------------------------------------
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description="Broker, job store and event streams. `redis://`, `rediss://` or `sentinel://`.",
    )
    redis_sentinel_master: str | None = Field(None, description="Master name, with a sentinel:// URL.")
    redis_password: SecretStr | None = Field(None, description="Password of the Redis master.")
    redis_sentinel_password: SecretStr | None = Field(None, description="Password of the sentinels.")
    data_dir: Path = Field(Path(".vlmq"), description="Demo models, cache files, embedded Redis data.")
    models_file: Path | None = Field(
        None, description="Model registry (TOML). Default: the registry shipped in vlmq/models.toml."
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="JSON merged over the registry file, per model: "
        '`{"blip-base": {"source": "Salesforce/blip-image-captioning-base"}}`.',
    )
    groups: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='JSON merged over the registry file, per model group: `{"llava-ft": {"max_loaded": 8}}`.',
    )

    blob_url: str = Field(
        "", description="Where images and artifacts live: `file:///folder` (default: `data_dir/blobs`) or "
        "`s3://bucket/prefix` (S3-compatible object storage, for several machines).",
    )
    blob_s3_endpoint: str = Field("", description="S3 endpoint URL (MinIO, Ceph, R2...; empty: AWS).")
    blob_s3_region: str = Field("us-east-1", description="S3 region.")
    blob_s3_access_key_id: str = Field("", description="S3 access key id (empty: the AWS default chain).")
    blob_s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")

    # --- jobs -------------------------------------------------------------------------------
    job_ttl_s: int = Field(86_400, ge=60, description="How long job records, images and events live.")
    max_attempts: int = Field(3, ge=1, le=20, description="Deliveries of one job before it fails.")
    visibility_timeout_s: int = Field(
        600, ge=5, description="An unacknowledged job is redelivered after this (longer than any job)."
    )

    # --- images -----------------------------------------------------------------------------
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest upload or download.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest width x height decoded.")
    max_image_side: int = Field(12_000, ge=1, description="Largest width or height.")
    url_timeout_s: float = Field(10.0, gt=0, description="Whole-download deadline for `image_url`.")
    url_max_redirects: int = Field(3, ge=0, description="Redirects followed, each one checked again.")
    url_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs a URL may reach although private or loopback (for tests, intranets).",
    )

    # --- clients: keys, webhooks, idempotency -----------------------------------------------
    auth_mode: Literal["auto", "required", "open"] = Field(
        "auto", description="open: requests without a key are allowed (as 'anonymous'); auto: open only "
        "when the API binds a loopback address; required: every request needs a key.",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Signs webhooks of jobs sent without a key (whsec_...); default: one generated "
        "and kept in Redis (`vlmq keys secret` shows it).",
    )
    webhook_max_attempts: int = Field(8, ge=1, le=30, description="Deliveries tried per webhook event.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Per delivery attempt.")
    webhook_backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles, with jitter.")
    idempotency_ttl_s: int = Field(86_400, ge=60, description="How long an Idempotency-Key returns its job.")
    max_batch_jobs: int = Field(1000, ge=1, le=10_000, description="Jobs per POST /v1/batches.")
    openai_file_max_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Largest file `POST /openai/v1/files` takes (a batch's JSONL)."
    )
    openai_batch_max_lines: int = Field(50_000, ge=1, description="Requests per OpenAI-style batch file.")
    openai_batch_lease_s: int = Field(
        30, ge=2, description="How soon another API process takes over a batch whose API process died."
    )
    openai_file_ttl_s: int = Field(
        30 * 86_400, ge=60, description="How long OpenAI-style files and batches live (jobs: job_ttl_s)."
    )

    # --- cache ------------------------------------------------------------------------------
    cache_enabled: bool = Field(True, description="Answer repeated requests from the cache.")
    cache_ttl_s: int = Field(86_400, ge=1, description="How long a cached answer is served.")
    cache_max_entries: int = Field(100_000, ge=10, description="Semantic-tier entries kept (LRU past it).")
    cache_semantic: bool = Field(True, description="Also answer paraphrases (semantic tier).")
    cache_similarity: float = Field(
        0.80, gt=0, le=1, description="Least cosine similarity for a semantic hit (then the guard decides)."
    )

    # --- workers ----------------------------------------------------------------------------
    torch_threads: int = Field(1, ge=1, description="torch.set_num_threads in each model worker.")
    gil_switch_ms: float = Field(
        0.5, gt=0, le=100, description="sys.setswitchinterval in each model worker: how soon the model's thread "
        "gets the GIL back from the threads preparing and finishing the other batches (Python's default: 5)."
    )
    worker_malloc_reuse: bool = Field(
        True, description="glibc: one malloc arena per model worker and freed buffers up to 32 MiB kept for reuse "
        "instead of an mmap and page faults per tensor (a full-size CPU forward pass ~12% faster)."
    )

    # --- logs -------------------------------------------------------------------------------
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line, with job_id.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR.")

    # --- services started by `vlmq up` ------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Where `vlmq api` binds (0.0.0.0 in containers).")
    api_port: int = Field(8000, description="Port of `vlmq api`.")
    api_workers: int = Field(1, ge=1, le=64, description="Processes of `vlmq api` sharing its port (one core each; a `SO_REUSEPORT` socket each on Linux).")
    flower_host: str = Field("127.0.0.1", description="Where `vlmq flower` binds.")
    flower_port: int = Field(5555, description="Port of Flower.")
    frontend_host: str = Field("127.0.0.1", description="Where `vlmq frontend` binds.")
    frontend_port: int = Field(7860, description="Port of the Gradio frontend.")
    api_url: str = Field("", description="Where the frontend and CLI find the API (default: api_host:api_port).")
    api_key: SecretStr | None = Field(None, description="Bearer key the CLI and frontend send.")
    flower_basic_auth: SecretStr | None = Field(None, description="user:password for Flower (none: open).")

    @field_validator("url_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _default_api_url(self) -> Settings:
        if not self.api_url:
            host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
            self.api_url = f"http://{host}:{self.api_port}"
        return self

    @property
    def demo_models_dir(self) -> Path:
        return self.data_dir / "demo-models"

    @property
    def auth_open(self) -> bool:
        if self.auth_mode == "auto":
            return self.api_host in ("127.0.0.1", "localhost", "::1")
        return self.auth_mode == "open"

    @field_validator("webhook_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("webhook_secret must be a Standard Webhooks secret: whsec_<base64>")
        return value

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
