"""The FastAPI application: `create_app()` wires settings, services, routes and error handlers.

Run it with `vlmq api` (or `uvicorn --factory vlmq.api.main:create_app`).
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vlmq import __version__
from vlmq.api import openapi
from vlmq.api.body_limit import BodySizeLimit
from vlmq.api.errors import install_error_handlers
from vlmq.api.methods import MethodHandling
from vlmq.api.metrics import FleetCollector, install_metrics
from vlmq.api.openai_batches import BatchRunner
from vlmq.api.routes import admin, batches, health, jobs, models, openai, openai_batches
from vlmq.api.schemas import ErrorBody
from vlmq.api.services import Services
from vlmq.logs import setup_logging
from vlmq.registry import load_registry
from vlmq.settings import Settings, get_settings

#: What any /v1 route may answer besides its own codes (docs/api.md, "Errors").
COMMON_ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed JSON body."},
    401: {"model": ErrorBody, "description": "No valid API key (when one is required)."},
    404: {"model": ErrorBody, "description": "Unknown, expired, or another caller's."},
    422: {"model": ErrorBody, "description": "Invalid request; `error.field` names the field."},
    503: {"model": ErrorBody, "description": "Redis unreachable; retry after Retry-After seconds."},
}


def _fleet_collector(app: FastAPI) -> FleetCollector | None:
    services = getattr(app.state, "services", None)
    if services is None:
        return None
    return FleetCollector(services.metrics, services.fleet, services.registry)


async def _freeze_when_loaded(services: Services) -> None:
    """Take what start-up loaded out of the garbage collector's way: `gc.freeze()` once the answer
    cache's embedder (torch, MiniLM: millions of objects) is loaded. Without it every full
    collection walks them all, and requests wait for it (a tail of hundreds of milliseconds)."""
    cache = services.cache
    if cache is not None and services.settings.cache_semantic:
        await asyncio.to_thread(cache.wait_ready, 300)
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging("api", settings.log_format, settings.log_level)
    registry = load_registry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = Services.build(settings, registry)
        freeze = asyncio.create_task(_freeze_when_loaded(app.state.services))
        runner = BatchRunner(app.state.services)  # OpenAI-style batches, leased across API processes
        batches_task = asyncio.create_task(runner.run())
        try:
            yield
        finally:
            freeze.cancel()
            batches_task.cancel()
            await runner.aclose()
            await app.state.services.aclose()

    app = FastAPI(
        title="vlmq",
        version=__version__,
        description="Asynchronous jobs for vision-language models. See docs/api.md for the contract.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (jobs, batches, models, admin, openai, openai_batches):
        app.include_router(module.router, responses=COMMON_ERRORS)
    app.include_router(health.router)
    install_metrics(app, lambda: _fleet_collector(app))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_image_bytes * 4 // 3 + 256 * 1024,
                       larger={"/openai/v1/files": settings.openai_file_max_bytes})
    app.add_middleware(MethodHandling, routes_of=app)
    openapi.install(app, registry, settings.max_batch_jobs)
    return app
