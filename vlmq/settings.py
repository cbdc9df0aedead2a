"""All of vlmq's settings, in one object, read from `VLMQ_*` environment variables.

Every process (API, worker, frontend, CLI) reads the same `Settings`; nothing else reads the
environment. `get_settings()` caches one instance per process; tests build their own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLMQ_", env_nested_delimiter="__", extra="ignore")

    # --- where things are -------------------------------------------------------------------
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description="Broker, job store and event streams. `redis://`, `rediss://` or `sentinel://`.",
    )
    data_dir: Path = Field(Path(".vlmq"), description="Demo models, cache files, embedded Redis data.")
    models_file: Path | None = Field(
        None, description="Model registry (TOML). Default: the registry shipped in vlmq/models.toml."
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="JSON merged over the registry file, per model: "
        '`{"blip-base": {"source": "Salesforce/blip-image-captioning-base"}}`.',
    )

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
    url_max_redirects: int = Field(3, ge=0)
    url_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs a URL may reach although private or loopback (for tests, intranets).",
    )

    # --- cache ------------------------------------------------------------------------------
    cache_enabled: bool = Field(True, description="Answer repeated requests from the cache.")
    cache_ttl_s: int = Field(86_400, ge=1, description="How long a cached answer is served.")
    cache_max_entries: int = Field(100_000, ge=10, description="Semantic-tier entries kept (LRU past it).")
    cache_semantic: bool = Field(True, description="Also answer paraphrases (semantic tier).")
    cache_similarity: float = Field(
        0.85, gt=0, le=1, description="Least cosine similarity for a semantic hit (then the guard decides)."
    )

    # --- workers ----------------------------------------------------------------------------
    torch_threads: int = Field(1, ge=1, description="torch.set_num_threads in each model worker.")

    # --- logs -------------------------------------------------------------------------------
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    # --- services started by `vlmq up` ------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    frontend_port: int = 7860
    api_url: str = Field("http://127.0.0.1:8000", description="Where the frontend and CLI find the API.")
    api_key: SecretStr | None = Field(None, description="Bearer key the CLI and frontend send.")
    flower_basic_auth: SecretStr | None = Field(None, description="user:password for Flower (none: open).")

    @field_validator("url_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @property
    def demo_models_dir(self) -> Path:
        return self.data_dir / "demo-models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
