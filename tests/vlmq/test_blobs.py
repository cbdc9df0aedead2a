"""The blob store (vlmq/blobs.py): one suite against the local folder and against a real S3-compatible
server process (moto's `moto_server`, started here), and the service on S3 end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.images import astronaut, data_uri
from tests.utils.jobs import run
from tests.utils.processes import start_api, start_worker, wait_ready
from vlmq.blobs import CHUNK, BlobStore, LocalBlobStore, artifact_name, blob_store, file_name, image_name
from vlmq.cli.redis_server import free_port
from vlmq.settings import Settings

BUCKET = "vlmq-test"
S3_MODEL = "faces-s3"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`moto_server`, a real HTTP server speaking S3, in a process of its own; a bucket in it."""
    here = str(Path(sys.executable).parent)
    binary = shutil.which("moto_server", path=here) or shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server is missing: scripts/setup.sh --dev installs moto[server]")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.put(f"{endpoint}/{BUCKET}", timeout=2).status_code in (200, 409):  # create the bucket
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def _s3_settings(endpoint: str, prefix: str) -> Settings:
    return Settings(blob_url=f"s3://{BUCKET}/{prefix}", blob_s3_endpoint=endpoint, blob_s3_access_key_id="test",
                    blob_s3_secret_access_key="test")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return blob_store(Settings(blob_url=(tmp_path / "blobs").as_uri()))
    endpoint = request.getfixturevalue("s3_server")
    return blob_store(_s3_settings(endpoint, f"suite-{time.time_ns()}"))


def test_put_get_delete(store: BlobStore) -> None:
    assert store.get(image_name("nope")) is None
    store.put(image_name("j1"), b"first")
    store.put(image_name("j1"), b"second")  # a rewrite replaces the whole blob
    assert store.get(image_name("j1")) == b"second"
    store.put(artifact_name("j1", "annotated.png"), b"png")
    store.delete(image_name("j1"), artifact_name("j1", "annotated.png"), image_name("never-written"))
    assert store.get(image_name("j1")) is None and store.get(artifact_name("j1", "annotated.png")) is None


def test_async_calls(store: BlobStore) -> None:
    async def go() -> bytes | None:
        await store.aput(image_name("a1"), b"async")
        got = await store.aget(image_name("a1"))
        await store.adelete(image_name("a1"))
        assert await store.aget(image_name("a1")) is None
        return got

    assert asyncio.run(go()) == b"async"


def test_a_file_larger_than_a_chunk_goes_in_from_a_file_and_streams_out_from_an_offset(
        store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 2 + 12345)
    source = tmp_path / "upload.jsonl"
    source.write_bytes(data)

    async def go() -> tuple[bytes, bytes]:
        with source.open("rb") as handle:
            await store.aput_file(file_name("f1"), handle)
        whole = b"".join([chunk async for chunk in store.astream(file_name("f1"))])
        tail = b"".join([chunk async for chunk in store.astream(file_name("f1"), CHUNK + 7)])
        return whole, tail

    whole, tail = asyncio.run(go())
    assert whole == data and tail == data[CHUNK + 7:]
    assert store.get(file_name("f1")) == data


def test_sweep_deletes_only_what_is_old(store: BlobStore) -> None:
    store.put(image_name("old"), b"o")
    time.sleep(1.2)
    store.put(image_name("new"), b"n")
    assert store.sweep("images", older_than_s=1.0) == 1
    assert store.get(image_name("old")) is None and store.get(image_name("new")) == b"n"


def test_a_local_name_cannot_leave_its_folder(tmp_path: Path) -> None:
    local = LocalBlobStore(tmp_path / "blobs")
    for bad in ("../escape", "images/../../x", "/etc/passwd", "images//x", ""):
        with pytest.raises(ValueError):
            local.put(bad, b"x")
    assert not (tmp_path / "escape").exists()


def test_the_service_on_s3(s3_server: str, base_env: dict[str, str], log_dir: Path, redis_url: str) -> None:
    """API and a worker sharing an S3 bucket: the image goes through it, the annotated PNG is served from
    it, and the image is deleted once its job ended."""
    prefix = f"service-{time.time_ns()}"
    # A model of its own: the session stack's "faces" worker reads the local store, not this bucket.
    models = {**json.loads(base_env["VLMQ_MODELS"]),
              S3_MODEL: {"adapter": "haar_cascade", "source": "opencv", "tasks": ["detect"]}}
    env = {**base_env, "VLMQ_BLOB_URL": f"s3://{BUCKET}/{prefix}", "VLMQ_BLOB_S3_ENDPOINT": s3_server,
           "VLMQ_BLOB_S3_ACCESS_KEY_ID": "test", "VLMQ_BLOB_S3_SECRET_ACCESS_KEY": "test",
           "VLMQ_MODELS": json.dumps(models)}
    worker = start_worker(S3_MODEL, env, log_dir)
    api, url = start_api(env, log_dir)
    try:
        wait_ready(redis_url, [worker], [S3_MODEL])
        with httpx.Client(base_url=url, timeout=30) as client:
            job = run(client, {"type": "detect", "model": S3_MODEL, "image_url": data_uri(astronaut()),
                               "prompt": "detect face", "cache": False})
            assert job["status"] == "succeeded" and job["output"]["boxes"], json.dumps(job)
            png = client.get(job["output"]["artifacts"]["annotated.png"])
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        store = blob_store(_s3_settings(s3_server, prefix))
        assert store.get(artifact_name(job["id"], "annotated.png")) == png.content
        assert store.get(image_name(job["id"])) is None  # its job ended: nothing needs it
    finally:
        api.stop()
        worker.stop()


def test_a_finished_jobs_image_is_deleted(stack, settings: Settings) -> None:
    """On the local store too: the image lives while its job may run, and no longer."""
    store = blob_store(settings)
    with stack.client() as client:
        job = run(client, {"type": "caption", "model": "blip-base", "image_url": data_uri(astronaut()),
                           "max_new_tokens": 3, "cache": False})
    assert job["status"] == "succeeded"
    assert store.get(image_name(job["id"])) is None
    assert not any(name.endswith(job["id"]) for name in os.listdir(Path(settings.blob_url[7:]) / "images"))

