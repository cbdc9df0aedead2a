"""The submit path's own cost: how many jobs one API process accepts, against bare floors, same run.

    python benchmarks/submit.py [--seconds 8] [--rounds 3] [--redis-db 10] [--profile] [--queued 10000]

Everything against one API process (`vlmq api`) and a registry model with no worker
(`bench-sink`, queue limit raised), so jobs only queue; `cache: false`; a closed-loop keep-alive
load generator in its own process (benchmarks/loadgen.py, raw asyncio sockets: it costs a small part
of what the server spends). Redis: its own database (`--redis-db`), flushed before and after.

1. 64 px JPEG as a data URI (JSON), 64 connections: vlmq, and the calibration app
   (benchmarks/bare_api.py) in the same run: pydantic only, pydantic + one Redis write, pydantic +
   Celery's `send_task`. Ratios vlmq / bare.
2. Real photos, 30-300 KB JPEGs (12 scikit-image photos at several sizes), multipart, 32 connections:
   one API process, and two (`vlmq api --workers 2`): accepted/s, p50, p99.

1 and 2 run `--rounds` interleaved rounds (each round loads every endpoint once, in a rotated order)
and report medians, and the median of the rounds' own ratios: this 2-core machine is shared, and a
load's rate moves by ±30% from one minute to the next.
3. Redis memory per queued job: `--queued` real photos queued (multipart), then `used_memory`
   (INFO) over the empty database, per job; the API's resident memory beside it.
4. With `--profile`: py-spy of the API process during 1 (self time by function, as microseconds
   per request).

API CPU per request = the API processes' CPU time / accepted jobs: one process uses at most one
core (GIL), so 1000 / that is its ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx
import numpy as np
import psutil
import redis
from PIL import Image
from skimage import data as photos

from benchmarks.bench_procs import Proc, run_loadgen, start_server, wait_quiet

SINK = "bench-sink"
BOUNDARY = "vlmqbenchboundary7MA4YWxkTrZu0gW"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "camera", "moon", "coins", "clock")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def jpeg(image: Image.Image, side: int, quality: int = 90) -> bytes:
    image = image.convert("RGB")
    scale = side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def real_photos() -> list[bytes]:
    """12 photos at sizes chosen so the JPEGs span 30-300 KB."""
    out = []
    for i, name in enumerate(PHOTOS):
        array = getattr(photos, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        image = Image.fromarray(array.astype(np.uint8) if array.dtype != np.uint8 else array)
        side = (320, 480, 640, 800, 1024, 1280)[i % 6]
        blob = jpeg(image, side)
        while len(blob) > 300_000 and side > 200:
            side = int(side * 0.85)
            blob = jpeg(image, side)
        while len(blob) < 30_000:
            side = int(side * 1.2)
            blob = jpeg(image, side)
        out.append(blob)
    return out


def multipart(image: bytes) -> bytes:
    request = json.dumps({"type": "caption", "model": SINK, "cache": False, "max_new_tokens": 20})
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{request}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def data_uri_body(image: bytes) -> bytes:
    return json.dumps({"type": "caption", "model": SINK, "cache": False, "max_new_tokens": 20,
                       "image_url": "data:image/jpeg;base64," + base64.b64encode(image).decode()}).encode()


def cpu_s(proc: Proc) -> float:
    """CPU seconds of a process and its children (uvicorn's workers)."""
    total = 0.0
    try:
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total


def rss_mib(proc: Proc) -> float:
    try:
        root = psutil.Process(proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def load(url: str, path: str, bodies: list[bytes], content_type: str, connections: int, seconds: float,
         work: Path, server: Proc, profile: Path | None = None) -> dict:
    files = []
    for i, body in enumerate(bodies):
        f = work / f"body-{time.time_ns()}-{i}"
        f.write_bytes(body)
        files += ["--body", str(f)]
    args = ["--url", url + path, *files, "--content-type", content_type, "--connections", str(connections),
            "--seconds", str(seconds), "--warmup", "1"]
    spy = None
    if profile is not None:
        spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", "--gil", "-r", "400", "-d", str(int(seconds) + 1), "-f", "raw",
                                "-o", str(profile), "-p", str(server.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0, wall0 = cpu_s(server), time.perf_counter()
    result, loadgen_cpu = run_loadgen(args, work)
    wall, cpu = time.perf_counter() - wall0, cpu_s(server) - cpu0
    if spy is not None:
        spy.wait()
    accepted = max(1, result["accepted"])
    result.update(cpu_ms=round(cpu / (accepted * (wall / max(result["seconds"], 1e-9))) * 1000, 3),
                  server_cores=round(cpu / wall, 2), loadgen_cores=round(loadgen_cpu / wall, 2))
    return result


def warm(*urls: str) -> None:
    """A few requests to each server (first-request imports), then until the machine is quiet: the API
    loads the answer cache's embedder (torch, MiniLM) in a background thread after it starts."""
    body = data_uri_body(jpeg(Image.fromarray(photos.chelsea()), 64))
    for url in urls:
        with httpx.Client(base_url=url, timeout=30) as client:
            for path in ("/v1/jobs", "/bare/accept", "/bare/redis", "/bare/send_task"):
                for _ in range(20):
                    client.post(path, content=body, headers={"content-type": "application/json"})
    wait_quiet(log=log)


def queue_photos(url: str, bodies: list[bytes], count: int, clients: int = 32) -> int:
    async def main() -> int:
        accepted = 0
        sent = 0
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
            async def one() -> None:
                nonlocal accepted, sent
                while sent < count:
                    body = bodies[sent % len(bodies)]
                    sent += 1
                    r = await client.post("/v1/jobs", content=body,
                                          headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
                    accepted += r.status_code == 202
            await asyncio.gather(*(one() for _ in range(clients)))
        return accepted

    return asyncio.run(main())


_STDLIB = {"asyncio", "json", "re", "logging", "threading", "uuid", "base64", "hashlib", "contextlib", "typing",
           "functools", "enum", "dataclasses", "collections", "email", "urllib", "http", "socket", "selectors"}


def _package(module: str) -> str:
    """py-spy's (relative) module path -> the package: vlmq's own folders as "vlmq"."""
    first = module.lstrip("<").split("/")[0].split(".")[0]
    if first in ("api", "vlmq", "tasks", "cache"):
        return "vlmq"
    return f"stdlib ({first})" if first in _STDLIB else first


def profile_table(path: Path, per_request_us: float, top: int = 12) -> list[str]:
    """Self time (py-spy --gil raw) by package and by vlmq function, as microseconds of API CPU per
    request (the row's measured CPU per request, shared out by sample counts)."""
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        module = leaf.split(" (")[-1].split(":")[0].rstrip(")") if " (" in leaf else "?"
        packages[_package(module)] += int(n)
        # the innermost vlmq frame on the stack: which of vlmq's steps the time is spent under
        for frame in reversed(frames):
            where = frame.split(" (")[-1].split(":")[0]
            if _package(where) == "vlmq":
                ours[f"{frame.split(' (')[0]} ({where})"] += int(n)
                break
        else:
            ours["(no vlmq frame: HTTP server, event loop, framework)"] += int(n)
    total = sum(packages.values()) or 1
    lines = ["| µs / request | share | package (self time) |", "|---:|---:|---|"]
    lines += [f"| {per_request_us * n / total:.0f} | {n / total:.1%} | {name} |"
              for name, n in packages.most_common(top)]
    lines += ["", "| µs / request | share | under vlmq's function (innermost on the stack) |", "|---:|---:|---|"]
    lines += [f"| {per_request_us * n / total:.0f} | {n / total:.1%} | {name} |" for name, n in ours.most_common(top)]
    return lines


def median_row(rows: list[dict]) -> dict:
    """Each figure of a load's result, the median over rounds."""
    return {key: round(statistics.median(row[key] for row in rows), 2) for key in rows[0]
            if isinstance(rows[0][key], (int, float))}


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the rate phases (medians)")
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--blob-url", default="", help="VLMQ_BLOB_URL (default: a folder in the run's data dir)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    work = Path(tempfile.mkdtemp(prefix="vlmq-submit-"))
    logs = work / "logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    # this run's images in a folder of their own under --blob-url, deleted at the end (10,000 photos
    # are gigabytes: on tmpfs, of memory)
    blob_url = f"{args.blob_url.rstrip('/')}/{work.name}" if args.blob_url else ""
    if blob_url:
        env["VLMQ_BLOB_URL"] = blob_url
    env.update(VLMQ_REDIS_URL=redis_url, VLMQ_DATA_DIR=str(work / "data"), VLMQ_LOG_LEVEL="WARNING",
               VLMQ_MODELS=json.dumps({SINK: {"adapter": "blip_caption", "source": "demo:blip-base",
                                              "tasks": ["caption"], "queue_limit": 100_000_000}}))
    small = jpeg(Image.fromarray(photos.chelsea()), 64)
    real = real_photos()
    sizes = sorted(len(b) // 1024 for b in real)
    procs: list[Proc] = []
    out: list[str] = [
        "# vlmq submit-path benchmark", "",
        (f"Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB; Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."), ""]
    try:
        wait_quiet(log=log)
        api, url = start_server("api", [sys.executable, "-m", "vlmq.cli", "api"], env, logs)
        procs.append(api)
        bare, bare_url = start_server("bare", [sys.executable, str(HERE / "bare_api.py"), "--redis-url", redis_url],
                                      env, logs)
        procs.append(bare)
        warm(url, bare_url)

        # 1. 64 px data URI ---------------------------------------------------------------------------
        log(f"64 px data URI, 64 connections: vlmq and the bare floors, {args.rounds} interleaved rounds")
        body = data_uri_body(small)
        targets = {"vlmq": (url, "/v1/jobs", api), **{name: (bare_url, f"/bare/{name}", bare)
                                                      for name in ("send_task", "redis", "accept")}}
        rounds: list[dict[str, dict]] = []
        for i in range(args.rounds):  # each round loads every endpoint once, in a rotated order
            order = list(targets)[i % len(targets):] + list(targets)[:i % len(targets)]
            measured = {}
            for name in order:
                where, path, proc = targets[name]
                measured[name] = load(where, path, [body], "application/json", 64, args.seconds, work, proc)
                client.flushdb()
            rounds.append(measured)
        profile = None
        if args.profile:  # a pass of its own: py-spy pauses the process it samples
            profile = work / "api-submit.txt"
            load(url, "/v1/jobs", [body], "application/json", 64, args.seconds, work, api, profile)
            client.flushdb()
        rows = {name: median_row([r[name] for r in rounds]) for name in targets}
        ratios = {name: sorted(r["vlmq"]["accepted_per_s"] / r[name]["accepted_per_s"] for r in rounds)
                  for name in targets if name != "vlmq"}
        out += ["## One API process, 64 px JPEG as a data URI (JSON), 64 connections", "",
                (f"{args.rounds} rounds, each loading every endpoint for {args.seconds:g} s in a rotated order; "
                 "each column is the median over the rounds, and vlmq / this the median of the rounds' own ratios "
                 "(their range in brackets): a disturbance of the shared machine during one load moves one round."), "",
                "| endpoint | accepted/s | p50 ms | p99 ms | API CPU ms / request | API cores | vlmq / this |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        labels = {"vlmq": "**vlmq** `POST /v1/jobs` (cache off)",
                  "send_task": "bare: pydantic + Celery `send_task`",
                  "redis": "bare: pydantic + one Redis write", "accept": "bare: pydantic only"}
        for name, row in rows.items():
            ratio = "" if name == "vlmq" else f"{statistics.median(ratios[name]):.2f}x ({_span(ratios[name])})"
            out.append(f"| {labels[name]} | {row['accepted_per_s']:,.0f} | {row['p50_ms']} | {row['p99_ms']} | "
                       f"{row['cpu_ms']:.2f} | {row['server_cores']:.2f} | {ratio} |")
        out += ["", (f"Targets: vlmq ≥ 2x bare send_task: **{statistics.median(ratios['send_task']):.2f}x**; "
                    f"vlmq ≥ 0.8x bare pydantic + Redis: **{statistics.median(ratios['redis']):.2f}x**."), ""]
        if profile is not None and profile.exists():
            out += [("Where the API's time goes (py-spy --gil at 400 Hz, a separate pass of the vlmq row), shared out "
                     "over its measured CPU per request:"), ""]
            out += profile_table(profile, rows["vlmq"]["cpu_ms"] * 1000) + [""]

        # 2. real photos, one and two API processes, interleaved ------------------------------------------
        log(f"real photos, multipart, 32 connections: one and two API processes, {args.rounds} interleaved rounds")
        bodies = [multipart(b) for b in real]
        ctype = f"multipart/form-data; boundary={BOUNDARY}"
        bare.stop()
        procs.remove(bare)
        api2, url2 = start_server("api2", [sys.executable, "-m", "vlmq.cli", "api", "--workers", "2"], env, logs)
        procs.append(api2)
        warm(url2)
        photo_rounds = []
        for i in range(args.rounds):
            measured = {}
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):
                where, proc = (url, api) if n == 1 else (url2, api2)
                measured[n] = load(where, "/v1/jobs", bodies, ctype, 32, args.seconds, work, proc)
                client.flushdb()
            photo_rounds.append(measured)
        api2.stop()
        procs.remove(api2)
        one, two = (median_row([r[n] for r in photo_rounds]) for n in (1, 2))
        scaling = sorted(r[2]["accepted_per_s"] / r[1]["accepted_per_s"] for r in photo_rounds)
        rates = sorted(r[1]["accepted_per_s"] for r in photo_rounds)
        out += [f"## Real photos ({len(real)} JPEGs, {sizes[0]}-{sizes[-1]} KiB), multipart, cache off, 32 connections",
                "", f"Medians over {args.rounds} interleaved rounds ({args.seconds:g} s per load).", "",
                "| API processes | accepted/s | p50 ms | p99 ms | API CPU ms / request | API cores |",
                "|---|---:|---:|---:|---:|---:|"]
        for n, row in ((1, one), (2, two)):
            out.append(f"| {n} | {row['accepted_per_s']:,.0f} | {row['p50_ms']} | {row['p99_ms']} | {row['cpu_ms']:.2f} | "
                       f"{row['server_cores']:.2f} |")
        out += ["", (f"Targets: ≥ 1,000/s with one process: **{one['accepted_per_s']:,.0f}/s** (rounds: "
                    f"{', '.join(f'{r:,.0f}' for r in rates)}), p99 ≤ 50 ms: **{one['p99_ms']} ms**; two processes ≥ 1.6x "
                    f"one: **{statistics.median(scaling):.2f}x** ({_span(scaling)})."), ""]
        api.stop()
        procs.remove(api)

        # 3. Redis memory per queued job ---------------------------------------------------------------
        log(f"{args.queued} real photos queued: Redis memory per job")
        api, url = start_server("api", [sys.executable, "-m", "vlmq.cli", "api"], env, logs)
        procs.append(api)
        client.flushdb()
        empty = client.info("memory")["used_memory"]
        accepted = queue_photos(url, bodies, args.queued)
        full = client.info("memory")["used_memory"]
        per_job = (full - empty) / max(1, accepted)
        kinds: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for key in client.scan_iter(count=1000):
            name = key.decode(errors="replace")
            kind = name.split(":")[1] if name.startswith("vlmq:") else name.split(".")[0] + " (queue)"
            kinds[kind] += client.memory_usage(key) or 0
            counts[kind] += 1
        blob_root = Path(blob_url.removeprefix("file://")) if blob_url else work / "data" / "blobs"
        blob_bytes = sum(f.stat().st_size for f in blob_root.rglob("*") if f.is_file())
        out += [f"## Redis memory with {accepted:,} real photos queued (`used_memory`, INFO)", "",
                (f"**{per_job:,.0f} bytes per queued job** (target ≤ 2,048), whatever the image size: the images "
                f"({blob_bytes / 2**20:,.0f} MiB) are in the blob store, not in Redis. API resident memory: "
                f"{rss_mib(api):,.0f} MiB."), "", "| key kind | keys | bytes (MEMORY USAGE) | bytes / job |",
                "|---|---:|---:|---:|"]
        for kind, size in kinds.most_common():
            out.append(f"| `{kind}` | {counts[kind]:,} | {size:,} | {size / max(1, accepted):,.0f} |")
        out.append("")
    finally:
        for proc in procs:
            proc.stop()
        client.flushdb()
        if blob_url.startswith("file://"):
            shutil.rmtree(blob_url.removeprefix("file://"), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
