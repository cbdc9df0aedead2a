"""Payloads out of Redis: images, artifacts and files in a blob store; Redis keeps metadata and queues.

One small interface (`BlobStore`), two stores:

- `LocalBlobStore`: a folder (default `VLMQ_DATA_DIR/blobs`, `VLMQ_BLOB_URL=file:///path`): one
  machine, or a shared filesystem. Writes are atomic (a temporary file, then a rename).
- `S3BlobStore`: S3-compatible object storage (`VLMQ_BLOB_URL=s3://bucket/prefix`, endpoint and
  credentials in `VLMQ_BLOB_S3_*`) through `obstore` (Rust's `object_store`): several machines.

Names are paths: ``images/<id>`` (the image of one submitted job; a compare job's children share
their parent's), ``artifacts/<job id>/<name>`` (an annotated PNG, ...), ``files/<file id>`` (an
OpenAI-style batch's input, output and error files, api/openai_files.py). Lifetimes:

- an image is written by the API before its job is queued and deleted by whoever makes the job
  final (a worker, a cancel, a deadline): no other job reads it, so there is nothing to count;
- an artifact lives as long as its job record (`job_ttl_s`);
- a file lives until it is deleted, or `openai_file_ttl_s`;
- `sweep` deletes what a crash left behind: anything older than its lifetime (each worker runs it
  every few minutes, `tasks/reconcile.py`).

Files can be larger than memory: `aput_file` stores an open file (S3: a multipart upload) and
`astream` reads a blob in chunks from a byte offset.

Both stores have blocking methods (the workers) and `a`-prefixed coroutines (the API's event loop:
the local store's writes are page-cache writes, done inline; S3 calls are awaited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from vlmq.settings import Settings

log = logging.getLogger("vlmq.blobs")
IMAGES = "images"
ARTIFACTS = "artifacts"
FILES = "files"
#: Bytes per chunk that `astream` yields.
CHUNK = 1 << 20


def image_name(owner_id: str) -> str:
    """The blob of the image of job (or compare parent) `owner_id`."""
    return f"{IMAGES}/{owner_id}"


def artifact_name(job_id: str, name: str) -> str:
    return f"{ARTIFACTS}/{job_id}/{name}"


def file_name(file_id: str) -> str:
    return f"{FILES}/{file_id}"


def owned_images(record) -> list[str]:
    """The image blob a job that just became final leaves behind: its own (a compare child's image is
    its parent's, deleted when the parent ends)."""
    return [record.image] if record.image and record.image == image_name(record.id) else []


class BlobStore(Protocol):
    def put(self, name: str, data: bytes) -> None: ...
    def get(self, name: str) -> bytes | None: ...
    def delete(self, *names: str) -> None: ...
    def sweep(self, prefix: str, older_than_s: float) -> int: ...
    async def aput(self, name: str, data: bytes) -> None: ...
    async def aget(self, name: str) -> bytes | None: ...
    async def adelete(self, *names: str) -> None: ...
    async def aput_file(self, name: str, file: BinaryIO) -> None: ...
    def astream(self, name: str, start: int = 0) -> AsyncIterator[bytes]: ...


#: A blob name: path segments of letters, digits, `.`, `_`, `-`, `@` (no `..`, no absolute path).
_NAME = re.compile(r"^(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9._@-]+(/[A-Za-z0-9._@-]+)*$")


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)

    def _path(self, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"blob name {name!r}: path segments of letters, digits, '.', '_', '-', '@'")
        return f"{self._root}/{name}"

    def put(self, name: str, data: bytes) -> None:
        """Written to a temporary name, then renamed: a reader sees the whole blob or none."""
        path = self._path(name)
        tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # the first blob of its folder
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, name: str) -> bytes | None:
        try:
            with open(self._path(name), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, *names: str) -> None:
        for name in names:
            path = self._path(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            folder = os.path.dirname(path)  # artifacts/<job id>/[<sub>/]<file>: folders go with their last file
            for _ in range(name.count("/") - 1):
                try:
                    os.rmdir(folder)
                except OSError:
                    break
                folder = os.path.dirname(folder)

    def sweep(self, prefix: str, older_than_s: float) -> int:
        """Delete the blobs under `prefix` last written more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        top = self._path(prefix)
        gone = 0
        for directory, _dirs, files in os.walk(top):
            for file in files:
                path = Path(directory) / file
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                        gone += 1
                except FileNotFoundError:
                    pass
        return gone

    # A local write of an image is a page-cache write (tens of microseconds): done inline.
    async def aput(self, name: str, data: bytes) -> None:
        self.put(name, data)

    async def aget(self, name: str) -> bytes | None:
        return self.get(name)

    async def adelete(self, *names: str) -> None:
        self.delete(*names)

    async def aput_file(self, name: str, file: BinaryIO) -> None:
        """Copied in a thread (a file may be hundreds of megabytes), then renamed into place."""
        def copy() -> None:
            path = self._path(name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            try:
                with open(tmp, "wb") as handle:
                    shutil.copyfileobj(file, handle, CHUNK)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        await asyncio.to_thread(copy)

    async def astream(self, name: str, start: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from `start`, a chunk at a time (FileNotFoundError: no such blob)."""
        handle = await asyncio.to_thread(open, self._path(name), "rb")
        try:
            handle.seek(start)
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        from obstore.store import S3Store

        options: dict = {}
        if settings.blob_s3_endpoint:
            options["endpoint"] = settings.blob_s3_endpoint
        if settings.blob_s3_access_key_id:
            options["access_key_id"] = settings.blob_s3_access_key_id
        if settings.blob_s3_secret_access_key:
            options["secret_access_key"] = settings.blob_s3_secret_access_key.get_secret_value()
        self.store = S3Store(
            bucket, prefix=prefix or None, region=settings.blob_s3_region,
            virtual_hosted_style_request=False,
            client_options={"allow_http": settings.blob_s3_endpoint.startswith("http://")}
            if settings.blob_s3_endpoint else None,
            **options,
        )

    def put(self, name: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, name, data)

    def get(self, name: str) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get(self.store, name).bytes())
        except FileNotFoundError:
            return None

    def delete(self, *names: str) -> None:
        import obstore

        if names:
            obstore.delete(self.store, list(names))

    def sweep(self, prefix: str, older_than_s: float) -> int:
        import obstore

        cutoff = time.time() - older_than_s
        old = [meta["path"] for batch in obstore.list(self.store, prefix=prefix) for meta in batch
               if meta["last_modified"].timestamp() < cutoff]
        for start in range(0, len(old), 1000):
            obstore.delete(self.store, old[start : start + 1000])
        return len(old)

    async def aput(self, name: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(self.store, name, data)

    async def aget(self, name: str) -> bytes | None:
        import obstore

        try:
            result = await obstore.get_async(self.store, name)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None

    async def adelete(self, *names: str) -> None:
        import obstore

        if names:
            await obstore.delete_async(self.store, list(names))

    async def aput_file(self, name: str, file: BinaryIO) -> None:
        """A multipart upload, read from the file a part at a time."""
        import obstore

        await obstore.put_async(self.store, name, file, chunk_size=8 * 1024 * 1024)

    async def astream(self, name: str, start: int = 0) -> AsyncIterator[bytes]:
        import obstore

        result = await obstore.get_async(self.store, name, options={"range": {"offset": start}} if start else None)
        async for chunk in result.stream(min_chunk_size=CHUNK):
            yield bytes(chunk)


def blob_store(settings: Settings) -> BlobStore:
    """The store `VLMQ_BLOB_URL` names: `file:///path` (default: the data dir's `blobs/`) or
    `s3://bucket/prefix`."""
    url = settings.blob_url or (settings.data_dir / "blobs").resolve().as_uri()
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobStore(Path(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"VLMQ_BLOB_URL={url!r}: s3://<bucket>[/<prefix>]")
        return S3BlobStore(parts.netloc, parts.path.strip("/"), settings)
    raise ValueError(f"VLMQ_BLOB_URL={url!r}: use file:///<folder> or s3://<bucket>[/<prefix>]")


def delete_quietly(store: BlobStore, *names: str) -> None:
    """Delete blobs no job needs any more; a store that fails leaves them to the sweep."""
    try:
        store.delete(*names)
    except Exception as exc:  # noqa: BLE001 - object stores raise their own error types
        log.warning("blobs %s not deleted (the sweep will): %s", names, exc)


async def adelete_quietly(store: BlobStore, *names: str) -> None:
    try:
        await store.adelete(*names)
    except Exception as exc:  # noqa: BLE001 - object stores raise their own error types
        log.warning("blobs %s not deleted (the sweep will): %s", names, exc)
