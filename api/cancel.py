"""Canceling a job for a client (the cancel route, a canceled batch): a queued job never runs, a
running generative job stops at its next token, a compare job's children go with it."""

from __future__ import annotations

from vlmq.api.services import Services
from vlmq.blobs import delete_quietly, owned_images
from vlmq.jobs import JobRecord


def cancel(services: Services, record: JobRecord, reason: str) -> JobRecord:
    """Cancel `record` (blocking Redis calls: run it in a thread from a coroutine); the job afterwards.
    Idempotent: a job already final is returned as it is."""
    store = services.store
    for child in store.get_many(record.children.values()):
        if child is not None and store.cancel(child.id, reason):
            services.lanes.left(child)
    if store.cancel(record.id, reason) and not record.status.final:
        services.lanes.left(record)  # it waits no more: its place in the lane is free
        delete_quietly(services.blobs, *owned_images(record))
        services.notifier.final(store.get(record.id) or record)
    return store.get(record.id) or record
