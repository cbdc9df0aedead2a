"""Throughput benchmark: batching through vlmq vs the model's own batched loop vs one request per forward.

    python benchmarks/throughput.py            # full run (~15 min on 2 CPU cores): full-size BLIP-base
    python benchmarks/throughput.py --quick    # smoke test (< 1 min): tiny demo model only, few images

Everything runs in one invocation, same model, same images, same decoding (greedy, `max_new_tokens`
fixed and `min_new_tokens` = `max_new_tokens` in the saved generation config, so random weights never
stop early and every image does the same work):

1. raw loop: the model's `generate` on batches of B images, in this process, no service;
2. one request per forward: one `generate` per image, sequential (the seed demos' design);
3. vlmq: C concurrent clients (asyncio, `vlmq.client.AsyncClient`) submit over HTTP with
   `Prefer: wait=60` and wait for each result; throughput and latency percentiles; the batch size
   distribution read back from the API's /metrics (`vlmq_batch_size`).
4. service overhead (tiny demo model, one client, one job at a time), from server-side timestamps,
   beside a bare Celery round trip on the same Redis (benchmarks/bare_celery.py);
5. batch filling: a backlog queued before the worker starts, drained;
6. resident memory of the API and of each worker.

The tiny model's vlmq mode is driven by benchmarks/loadgen.py (a raw-socket client in its own process)
so that the client's CPU does not compete with the worker for the machine's two cores. The submit
path's own cost is benchmarks/submit.py.

The workers run the service's code and registry defaults as they are (max_batch_size 8, max_wait_ms
from the registry's default).

The benchmark starts and stops its own API and workers (`python -m vlmq.cli api|worker`) against
Redis (default `redis://127.0.0.1:6379/9`) with its own VLMQ_DATA_DIR under benchmarks/.runs/; its
models have their own names (`bench-*`, a registry override through VLMQ_MODELS), so no other
worker on the same Redis takes its jobs, and it deletes its own keys at the end (never FLUSHDB).
Models are cached under benchmarks/.cache/ (git-ignored). The Markdown report goes to stdout (and
to --out). Method notes are printed with the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bare_celery
import bench_models
import httpx
import psutil
import redis
from bench_procs import (
    CpuWatch,
    Proc,
    clean_jobs,
    clean_models,
    model_job_ids,
    run_loadgen,
    spawn,
    start_api,
    start_worker,
    wait_quiet,
    wait_ready,
)

TINY, FULL = "bench-tiny", "bench-full"
FINAL = {"succeeded", "failed", "canceled", "aborted"}


# --- small helpers ----------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Percentile by linear interpolation (numpy's default)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    try:
        root = str(HERE.parent)
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.splitlines()
        code = f"commit {commit}" + (f" + uncommitted changes in {len(dirty)} tracked files" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        code = "unknown"
    return {
        "code": code,
        "cpu": model,
        "logical_cpus": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_avg": os.getloadavg(),
    }


@dataclass
class Mode:
    name: str
    images: int
    wall_s: float
    cpu: CpuWatch | None = None
    latencies: list[float] = field(default_factory=list)
    notes: str = ""
    batches: dict | None = None

    @property
    def rate(self) -> float:
        return self.images / self.wall_s


# --- 1 and 2: in-process loops ------------------------------------------------------------------


def load_hf(folder: Path):
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = BlipForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, BlipProcessor.from_pretrained(folder)


def caption_batch(model, processor, images: list, max_new_tokens: int) -> list[str]:
    """What the blip_caption adapter does for a batch, without vlmq: preprocess, generate, decode."""
    import torch

    inputs = processor(images=images, return_tensors="pt")
    inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    assert out.shape[1] == max_new_tokens + 1, out.shape  # [DEC] + exactly max_new_tokens: no early stop
    return [t.strip() for t in processor.tokenizer.batch_decode(out, skip_special_tokens=True)]


def in_process(folder: Path, images: list, batch: int, threads: int, max_new_tokens: int,
               one_per_forward_images: int) -> tuple[Mode, Mode]:
    import torch

    torch.set_num_threads(threads)
    model, processor = load_hf(folder)
    caption_batch(model, processor, images[:1], max_new_tokens)  # warm-up (not timed), as the worker gets
    with CpuWatch() as cpu:
        began = time.perf_counter()
        per_batch = []
        for start in range(0, len(images), batch):
            t = time.perf_counter()
            caption_batch(model, processor, images[start : start + batch], max_new_tokens)
            per_batch.append(time.perf_counter() - t)
        wall = time.perf_counter() - began
    raw = Mode(f"raw loop (generate, batch {batch})", len(images), wall, cpu,
               notes=f"{len(per_batch)} batches, median {statistics.median(per_batch):.2f} s/batch")
    subset = images[:one_per_forward_images]
    with CpuWatch() as cpu:
        began = time.perf_counter()
        per_image = []
        for image in subset:
            t = time.perf_counter()
            caption_batch(model, processor, [image], max_new_tokens)
            per_image.append(time.perf_counter() - t)
        wall = time.perf_counter() - began
    single = Mode("one request per forward (batch 1)", len(subset), wall, cpu, latencies=per_image,
                  notes=f"median {statistics.median(per_image):.3f} s/image")
    del model
    import gc

    gc.collect()
    return raw, single


# --- 3: through vlmq ------------------------------------------------------------------------------


async def _submit_and_wait(client, blob: bytes, model: str, max_new_tokens: int, wait_s: int = 60) -> dict:
    job = await client.submit(blob, type="caption", model=model, cache=False, max_new_tokens=max_new_tokens,
                              headers={"Prefer": f"wait={wait_s}"})
    while job["status"] not in FINAL:  # still running after the wait: follow its events to the end
        async for event in client.stream(job["id"]):
            if event.final:
                break
        job = await client.get(job["id"])
    return job


async def closed_loop(url: str, model: str, blobs: list[bytes], clients: int, max_new_tokens: int
                      ) -> tuple[float, list[float], list[dict]]:
    """`clients` concurrent clients share the list of images: each submits the next image as soon as
    its previous job ended. Returns (wall seconds, client latencies, final jobs)."""
    from vlmq.client import AsyncClient

    work = iter(range(len(blobs)))
    latencies: list[float] = []
    jobs: list[dict] = []
    async with AsyncClient(url, timeout=120) as client:

        async def one_client() -> None:
            for i in work:
                t = time.perf_counter()
                job = await _submit_and_wait(client, blobs[i], model, max_new_tokens)
                latencies.append(time.perf_counter() - t)
                jobs.append(job)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - began
    bad = [j for j in jobs if j["status"] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not succeed, e.g. {bad[0]}")
    return wall, latencies, jobs


def scrape_batches(url: str, model: str) -> dict:
    """vlmq_batch_size and vlmq_batch_seconds of `model` from the API's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict = {"size_buckets": {}, "size_sum": 0.0, "size_count": 0.0, "seconds_sum": 0.0, "seconds_count": 0.0}
    label = f'model="{model}"'
    for line in text.splitlines():
        if label not in line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if line.startswith("vlmq_batch_size_bucket"):
            le = re.search(r'le="([^"]+)"', name).group(1)
            out["size_buckets"][le] = float(value)
        elif line.startswith("vlmq_batch_size_sum"):
            out["size_sum"] = float(value)
        elif line.startswith("vlmq_batch_size_count"):
            out["size_count"] = float(value)
        elif line.startswith("vlmq_batch_seconds_sum"):
            out["seconds_sum"] = float(value)
        elif line.startswith("vlmq_batch_seconds_count"):
            out["seconds_count"] = float(value)
    return out


def batch_delta(before: dict, after: dict) -> dict:
    cumulative = {le: after["size_buckets"].get(le, 0) - before["size_buckets"].get(le, 0)
                  for le in after["size_buckets"]}
    order = sorted(cumulative, key=lambda le: float("inf") if le == "+Inf" else float(le))
    per_bucket, previous, low = {}, 0.0, 1
    for le in order:
        n = cumulative[le] - previous
        previous = cumulative[le]
        if n:
            high = le if le == "+Inf" else str(int(float(le)))
            per_bucket[f"{low}" if str(low) == high else f"{low}-{high}"] = int(n)
        low = 1 if le == "+Inf" else int(float(le)) + 1
    count = after["size_count"] - before["size_count"]
    jobs = after["size_sum"] - before["size_sum"]
    seconds = after["seconds_sum"] - before["seconds_sum"]
    return {"batches": int(count), "jobs": int(jobs), "mean": jobs / count if count else float("nan"),
            "buckets": per_bucket, "predict_s": seconds}


def server_latencies(client: redis.Redis, job_ids: list[str]) -> list[dict]:
    from vlmq.store import JobStore

    records = JobStore(client, 86_400).get_many(job_ids)
    return [
        {"id": r.id, "created": r.created_at, "started": r.started_at, "completed": r.completed_at}
        for r in records if r is not None
    ]


async def _submit_many(url: str, model: str, blobs: list[bytes], n: int, max_new_tokens: int) -> list[str]:
    from vlmq.client import AsyncClient

    async with AsyncClient(url, timeout=60) as client:
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> str:
            async with gate:
                job = await client.submit(blobs[i % len(blobs)], type="caption", model=model, cache=False,
                                          max_new_tokens=max_new_tokens)
                return job["id"]

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def drain_test(url: str, rclient: redis.Redis, model: str, blobs: list[bytes], n: int, max_new_tokens: int,
               start) -> tuple[dict, list[str]]:
    """Queue n jobs while no worker serves `model`, then start one (`start()` returns it; it stays up)
    and let it drain the backlog: how full are its batches when jobs are always waiting?"""
    from vlmq.store import JobStore

    ids = asyncio.run(_submit_many(url, model, blobs, n, max_new_tokens))
    before = scrape_batches(url, model)
    wait_ready(rclient, start(), model)
    store = JobStore(rclient, 86_400)
    deadline = time.monotonic() + 300
    while not all(s in FINAL for s in store.statuses(ids)):
        if time.monotonic() > deadline:
            raise RuntimeError("the backlog was not drained in 300 s")
        time.sleep(0.05)
    after = scrape_batches(url, model)
    records = server_latencies(rclient, ids)
    span = max(r["completed"] for r in records) - min(r["started"] for r in records)
    return {"delta": batch_delta(before, after), "span": span, "n": n}, ids


def loadgen_mode(url: str, rclient: redis.Redis, model: str, blobs: list[bytes], clients: int, max_new_tokens: int,
                 procs: list[Proc], batch: int, seconds: float, run_dir: Path) -> tuple[Mode, list[str]]:
    """vlmq driven by benchmarks/loadgen.py: `clients` keep-alive connections, each POSTs a job with
    `Prefer: wait=60` (the answer comes when the job ends) and the next one at once; images/s = jobs
    answered `200` per second of the window. The client is a separate process costing ~0.03 cores,
    so the machine's two cores go to the API, the worker and Redis, as the raw loop's core goes to
    the model."""
    asyncio.run(closed_loop(url, model, blobs[:1], 1, max_new_tokens))  # warm-up: one job, not timed
    bodies = []
    for i, blob in enumerate(blobs):
        path = run_dir / f"tiny-body-{i}.json"
        path.write_bytes(submit_body(model, blob, False, max_new_tokens))
        bodies += ["--body", str(path)]
    before = scrape_batches(url, model)
    with CpuWatch(procs) as cpu:
        result, loadgen_cpu = run_loadgen(
            ["--url", url + "/v1/jobs", *bodies, "--connections", str(clients), "--seconds", str(seconds),
             "--warmup", "1", "--header", "Prefer:wait=60"], run_dir)
    cpu.extra_s = loadgen_cpu
    after = scrape_batches(url, model)
    delta = batch_delta(before, after)
    done = result["statuses"].get("200", 0)
    mode = Mode(f"vlmq ({clients} connections, max_batch_size {batch})", done, result["seconds"], cpu,
                [], batches=delta,
                notes=f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; {delta['batches']} batches, "
                      f"mean size {delta['mean']:.2f}")
    return mode, []


def vlmq_mode(url: str, rclient: redis.Redis, model: str, blobs: list[bytes], clients: int, max_new_tokens: int,
              procs: list[Proc], batch: int) -> tuple[Mode, list[str]]:
    asyncio.run(closed_loop(url, model, blobs[:1], 1, max_new_tokens))  # warm-up: one job, not timed
    before = scrape_batches(url, model)
    with CpuWatch(procs) as cpu:
        wall, latencies, jobs = asyncio.run(closed_loop(url, model, blobs, clients, max_new_tokens))
    after = scrape_batches(url, model)
    delta = batch_delta(before, after)
    ids = [j["id"] for j in jobs]
    server = server_latencies(rclient, ids)
    first_created = min(s["created"] for s in server)
    last_completed = max(s["completed"] for s in server)
    starts = sorted(s["started"] for s in server)
    sequence: list[int] = []
    if delta["batches"] and delta["predict_s"] / delta["batches"] > 0.5:  # long batches: clusters of started_at
        previous = None
        for t in starts:
            if previous is None or t - previous > 0.2:
                sequence.append(0)
            sequence[-1] += 1
            previous = t
        delta["sequence"] = sequence
    mode = Mode(f"vlmq ({clients} clients, max_batch_size {batch})", len(blobs), wall, cpu, latencies,
                batches=delta,
                notes=f"server span {last_completed - first_created:.1f} s; {delta['batches']} batches, "
                      f"mean size {delta['mean']:.2f}")
    return mode, ids


# --- 4: service overhead ----------------------------------------------------------------------------


def pure_model_times(folder: Path, images: list, max_new_tokens: int, threads: int, repeats: int = 3) -> list[float]:
    """The tiny model's time per image in this process, as the worker calls it (the blip_caption
    adapter's predict, one item), but without the worker's hooks (no token streaming, no cancel
    checks): the least of `repeats` runs per image."""
    import torch

    from vlmq.jobtypes.caption import CaptionParams
    from vlmq.registry import ModelSpec
    from vlmq.tasks.adapters.base import GenerationHooks, WorkItem
    from vlmq.tasks.adapters.blip_caption import BlipCaptionAdapter

    torch.set_num_threads(threads)
    spec = ModelSpec(name=TINY, adapter="blip_caption", source=str(folder), tasks=("caption",))
    adapter = BlipCaptionAdapter(spec, str(folder))
    adapter.setup()
    params = CaptionParams(max_new_tokens=max_new_tokens)
    adapter.run([WorkItem("warm", images[0], params)], GenerationHooks())
    times = []
    for image in images:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            adapter.run([WorkItem("x", image, params)], GenerationHooks())
            best = min(best, time.perf_counter() - t)
        times.append(best)
    return times


def batch_seconds(rclient: redis.Redis, model: str) -> tuple[float, float]:
    """(sum, count) of the worker's vlmq_batch_seconds for `model`, straight from its Redis hash."""
    from vlmq.keyspace import METRICS_PREFIX

    pipe = rclient.pipeline(transaction=False)
    pipe.hget(METRICS_PREFIX + "batch_seconds", f"model={model}|sum")
    pipe.hget(METRICS_PREFIX + "batch_seconds", f"model={model}|count")
    total, count = pipe.execute()
    return float(total or 0), float(count or 0)


STAGES = ("images", "preprocess", "claim")


def stage_seconds(rclient: redis.Redis, model: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the worker's vlmq_batch_stage_seconds for each stage before the forward pass."""
    from vlmq.metrics_store import SECONDS_BUCKETS, MetricsStore

    totals = {labels["stage"]: (total, count) for labels, _, total, count
              in MetricsStore(rclient).histogram("batch_stage_seconds", SECONDS_BUCKETS)
              if labels.get("model") == model}
    return {stage: totals.get(stage, (0.0, 0.0)) for stage in STAGES}


async def _overhead_loop(url: str, rclient: redis.Redis, model: str, blobs: list[bytes], n: int,
                         max_new_tokens: int) -> list[dict]:
    from vlmq.client import AsyncClient
    from vlmq.store import JobStore

    store = JobStore(rclient, 86_400)
    rows = []
    async with AsyncClient(url, timeout=60) as client:
        for i in range(n):
            blob_index = i % len(blobs)
            s0, c0 = batch_seconds(rclient, model)
            t = time.perf_counter()
            job = await _submit_and_wait(client, blobs[blob_index], model, max_new_tokens, wait_s=30)
            client_s = time.perf_counter() - t
            s1, c1 = batch_seconds(rclient, model)
            record = store.get(job["id"])
            rows.append({
                "id": job["id"], "image": blob_index, "client_s": client_s,
                "e2e_s": record.completed_at - record.created_at,
                "queue_s": record.started_at - record.created_at,
                "run_s": record.completed_at - record.started_at,
                "predict_s": s1 - s0, "batches": c1 - c0,
            })
    return rows


def overhead_mode(url: str, rclient: redis.Redis, model: str, blobs: list[bytes], pure: list[float], n: int,
                  max_new_tokens: int, procs: list[Proc]) -> tuple[dict, list[str]]:
    asyncio.run(_overhead_loop(url, rclient, model, blobs, 3, max_new_tokens))  # warm-up
    before = stage_seconds(rclient, model)
    with CpuWatch(procs) as cpu:
        rows = asyncio.run(_overhead_loop(url, rclient, model, blobs, n, max_new_tokens))
    after = stage_seconds(rclient, model)
    if any(r["batches"] != 1 for r in rows):
        log(f"warning: {sum(r['batches'] != 1 for r in rows)} jobs did not run as a batch of their own")
    ms = 1000
    o_predict = [(r["e2e_s"] - r["predict_s"]) * ms for r in rows]
    o_pure = [(r["e2e_s"] - pure[r["image"]]) * ms for r in rows]
    result = {
        "n": n,
        "cpu": cpu,
        "overhead_predict": o_predict,
        "overhead_pure": o_pure,
        "queue": [r["queue_s"] * ms for r in rows],
        "after_start": [(r["run_s"] - r["predict_s"]) * ms for r in rows],
        "hooks": [(r["predict_s"] - pure[r["image"]]) * ms for r in rows],
        "predict": [r["predict_s"] * ms for r in rows],
        "pure": [pure[r["image"]] * ms for r in rows],
        "e2e": [r["e2e_s"] * ms for r in rows],
        "client": [r["client_s"] * ms for r in rows],
        "http": [(r["client_s"] - r["e2e_s"]) * ms for r in rows],
        # mean ms per batch (one job each) of the worker's steps before the forward pass
        "stages": {stage: ms * (after[stage][0] - before[stage][0]) / max(1.0, after[stage][1] - before[stage][1])
                   for stage in STAGES},
    }
    return result, [r["id"] for r in rows]


# --- 5: submit rate -------------------------------------------------------------------------------------


def submit_body(model: str, image: bytes, cache: bool, max_new_tokens: int, prompt: str | None = None) -> bytes:
    body = {"type": "caption", "model": model, "max_new_tokens": max_new_tokens, "cache": cache,
            "image_url": "data:image/jpeg;base64," + base64.b64encode(image).decode()}
    if prompt:
        body["prompt"] = prompt
    return json.dumps(body).encode()


# --- profiling (optional) ------------------------------------------------------------------------


def start_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        log("py-spy not installed: no profile (pip install py-spy)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--format", "raw", "--output", str(out), "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PROJECT = ("api", "vlmq", "tasks", "cache")


def _where(frame: str) -> tuple[str, str]:
    """(package, short frame) of a py-spy frame "function (path:line)" (py-spy prints paths relative
    to their sys.path entry: "api/submit.py", "redis/client.py", "threading.py")."""
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return "?", frame
    function, path, _line = match.groups()
    path = path.split("site-packages/", 1)[-1]
    top = path.split("/", 1)[0].removesuffix(".py")
    package = "vlmq" if top in PROJECT else top
    return package, f"{function} ({path})"


def top_frames(collapsed: Path, n: int = 16) -> dict:
    """From py-spy's collapsed stacks: self time per package (sums to 100%), and inclusive time of
    vlmq's own functions (each counted once per sample)."""
    own_pkg: Counter = Counter()
    inclusive: Counter = Counter()
    own_fn: Counter = Counter()
    total = 0
    try:
        lines = collapsed.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        where = [_where(f) for f in frames]
        own_pkg[where[-1][0]] += count
        own_fn[where[-1][1]] += count
        for pkg, short in set(where):
            if pkg == "vlmq" and not short.startswith(("<module>", "main (", "api (", "worker (", "run_worker (")):
                inclusive[short] += count
    if not total:
        return {}
    pc = lambda c: 100 * c / total
    return {
        "samples": total,
        "packages": [(p, pc(c)) for p, c in own_pkg.most_common(12)],
        "vlmq": [(f, pc(c)) for f, c in inclusive.most_common(n)],
        "self": [(f, pc(c)) for f, c in own_fn.most_common(n)],
    }


def profile_lines(path: Path, label: str) -> list[str]:
    top = top_frames(path)
    if not top:
        return []
    lines = ["", f"py-spy record --gil --rate 200 ({label}; {top['samples']} samples taken while it held the GIL):",
             "", "```", "self time by package (what was running):"]
    lines += [f"  {share:5.1f}%  {pkg}" for pkg, share in top["packages"]]
    lines += ["inclusive time of vlmq's functions (on the stack):"]
    lines += [f"  {share:5.1f}%  {f}" for f, share in top["vlmq"]]
    lines += ["self time by function:"]
    lines += [f"  {share:5.1f}%  {f}" for f, share in top["self"]]
    return lines + ["```"]


# --- memory -----------------------------------------------------------------------------------------


def rss(proc: Proc | None) -> str:
    value = proc.rss_mib() if proc else None
    return f"{value:,.0f}" if value is not None else "n/a"


# --- report ------------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def mode_table(modes: list[Mode], raw: Mode, single: Mode) -> list[str]:
    lines = [("| mode | images | wall s | images/s | vs one-per-forward | vs raw loop | p50 s | p95 s | p99 s | "
             "CPU: this run / other users (cores) | notes |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in modes:
        lat = m.latencies
        p = (fmt(pct(lat, 50)), fmt(pct(lat, 95)), fmt(pct(lat, 99))) if lat and m is not raw else ("", "", "")
        cpu = f"{m.cpu.mine_cores:.2f} / {m.cpu.other_cores:.2f}" if m.cpu else ""
        lines.append(f"| {m.name} | {m.images} | {fmt(m.wall_s, 1)} | {fmt(m.rate, 3 if m.rate < 10 else 1)} | "
                     f"{fmt(m.rate / single.rate)}x | {fmt(m.rate / raw.rate)}x | {p[0]} | {p[1]} | {p[2]} | "
                     f"{cpu} | {m.notes} |")
    return lines


def targets(raw: Mode, single: Mode, vlmq: Mode) -> list[str]:
    ratio = vlmq.rate / raw.rate
    raw_gain = raw.rate / single.rate
    vlmq_gain = vlmq.rate / single.rate
    captured = (vlmq.rate - single.rate) / (raw.rate - single.rate) if raw.rate != single.rate else float("nan")
    return [
        f"- vlmq / raw loop = **{ratio:.3f}** (target ≥ 0.9: {'met' if ratio >= 0.9 else 'MISSED by ' + fmt(0.9 - ratio, 3)})",
        (f"- batching gain over one-per-forward: raw loop **{raw_gain:.2f}x**, vlmq **{vlmq_gain:.2f}x** "
        f"(vlmq captures {100 * captured:.0f}% of the raw loop's gain; target vlmq gain ≥ raw gain: "
        f"{'met' if vlmq_gain >= raw_gain else 'MISSED by ' + fmt(raw_gain - vlmq_gain) + 'x'})"),
    ]


def batch_line(m: Mode) -> str:
    b = m.batches or {}
    buckets = ", ".join(f"size {k}: {v}" for k, v in b.get("buckets", {}).items())
    return (f"- {m.name}: {b.get('batches', 0)} batches for {b.get('jobs', 0)} jobs, mean batch size "
            f"**{b.get('mean', float('nan')):.2f}** ({buckets}; /metrics buckets are 1, 2, 4, 8, ...: a batch "
            f"counted in 5-8 with mean 8.00 means all full); predict time {b.get('predict_s', 0):.1f} s in total, "
            f"{b.get('predict_s', 0) / max(b.get('batches', 0), 1):.2f} s per batch"
            + (f"; batch sizes in order (jobs grouped by the worker's `started_at`): "
               f"{', '.join(map(str, b['sequence']))}" if b.get("sequence") else ""))


def report(ctx: dict) -> str:
    m = ctx["machine"]
    if ctx["quick"]:
        shared = "- shared machine: --quick does not wait for a quiet machine nor repeat disturbed measurements"
    else:
        repeated = "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)} cores"
                             for k, v in ctx["others"].items() if len(v) > 1)
        shared = (f"- shared machine: before each phase the benchmark waits until other processes use < "
                  f"{ctx['quiet_cores']} cores (waited {sum(ctx['waited'].values()):.0f} s in all); the CPU columns "
                  f"show what other users still took during each measurement; a measurement during which they took "
                  f"more than {ctx['max_other']} cores is repeated (at most {ctx['retries']} times) and the least "
                  f"disturbed one is kept" + (f" (repeated here: {repeated})" if repeated else ""))
    out = [f"# vlmq throughput benchmark{' (--quick)' if ctx['quick'] else ''}", "",
           f"- command: `{ctx['command']}`",
           f"- date: {ctx['date']}",
           (f"- machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} cores), "
            f"{m['memory_gib']} GiB RAM, no GPU; Python {m['python']}, torch {m['torch']} (CPU), "
            f"transformers {m['transformers']}; load average at start {', '.join(f'{x:.2f}' for x in m['load_avg'])}"),
           f"- code: {m['code']}",
           f"- Redis: {ctx['redis_url']} (its own model names `bench-*`, keys removed at the end)",
           (f"- images: real photos from skimage.data ({', '.join(bench_models.PHOTOS[:6])}, ...), resized to "
            f"{len(bench_models.SHAPES)} sizes from 320 to 1024 px (several aspect ratios), JPEG q90; "
            f"every image distinct"),
           (f"- decoding: greedy, max_new_tokens = min_new_tokens = {ctx['max_new_tokens']} (every image "
            f"produces exactly {ctx['max_new_tokens']} tokens), `cache: false` on every vlmq job"),
           (f"- workers: max_batch_size {ctx['batch']}, max_wait_ms {ctx['max_wait_ms']} (the service's code and "
            "defaults as they are: a partial batch waits for queued jobs up to max_wait_ms; an idle worker runs a "
            "lone job after 2% of its recent batch time)"),
           shared, ""]
    for section in ctx["sections"]:
        out += section + [""]
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------------


def model_entry(source: Path, **extra) -> dict:
    return {"adapter": "blip_caption", "source": str(source), "tasks": ["caption"], **extra}


def main() -> int:
    from vlmq.registry import ModelSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, few images (< 1 min)")
    parser.add_argument("--redis-url", default=os.environ.get("VLMQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    parser.add_argument("--images", type=int, default=48, help="images per mode (full-size model)")
    parser.add_argument("--single-images", type=int, default=None, help="images for one-per-forward (default: --images)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size of the workers and the raw loop's B")
    parser.add_argument("--max-wait-ms", type=int, default=ModelSpec.model_fields["max_wait_ms"].default,
                        help="the workers' max_wait_ms (default: the registry's default)")
    parser.add_argument("--max-new-tokens", type=int, default=bench_models.MAX_NEW_TOKENS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the full-size model, all modes")
    parser.add_argument("--tiny-threads", type=int, default=1, help="torch threads for the tiny model, all modes")
    parser.add_argument("--tiny-jobs", type=int, default=192, help="images per in-process mode for the tiny model (cycled)")
    parser.add_argument("--tiny-seconds", type=float, default=10, help="measured window of the tiny model through vlmq")
    parser.add_argument("--overhead-jobs", type=int, default=200)
    parser.add_argument("--drain-jobs", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="py-spy the worker (overhead) and the API (submit)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--skip-full", action="store_true", help="tiny model sections only")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="before each phase, wait until other processes use fewer cores than this")
    parser.add_argument("--quiet-timeout", type=float, default=600, help="most seconds to wait per phase (0: never)")
    parser.add_argument("--max-other-cores", type=float, default=0.2,
                        help="a measurement during which other processes used more cores than this is run again")
    parser.add_argument("--retries", type=int, default=2, help="most repeats of a disturbed measurement")
    args = parser.parse_args()
    if args.quick:
        args.images, args.clients, args.overhead_jobs = 16, 8, 30
        args.tiny_jobs, args.drain_jobs = 32, 16
        args.skip_full = True
        args.quiet_timeout = 0
    single_images = args.single_images or args.images

    cache = HERE / ".cache"
    run_dir = HERE / ".runs" / time.strftime("%Y%m%d-%H%M%S")
    log_dir = run_dir / "logs"
    profile_dir = run_dir / "profiles"
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    log(f"run folder {run_dir}")
    log("models (cached in benchmarks/.cache)")
    tiny = bench_models.tiny_blip(cache, args.max_new_tokens)
    full = None if args.skip_full else bench_models.full_blip(cache, args.max_new_tokens)
    _names, blobs, images = bench_models.photos(args.images)
    tiny_images = [images[i % len(images)] for i in range(args.tiny_jobs)]
    tiny_blobs = [blobs[i % len(blobs)] for i in range(args.tiny_jobs)]

    rclient = redis.Redis.from_url(args.redis_url)
    rclient.ping()
    models = [TINY, FULL]
    clean_models(rclient, models)
    worker_entry = {"max_batch_size": args.batch, "max_wait_ms": args.max_wait_ms}
    registry = {
        TINY: model_entry(tiny, **worker_entry),
    }
    if full is not None:
        registry[FULL] = model_entry(full, **worker_entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    env.update(VLMQ_REDIS_URL=args.redis_url, VLMQ_DATA_DIR=str(run_dir / "data"), VLMQ_MODELS=json.dumps(registry),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    waited: dict[str, float] = {}
    others: dict[str, list[float]] = {}
    sections: list[list[str]] = []
    ctx = {
        "quick": args.quick, "machine": machine(), "redis_url": args.redis_url,
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "max_new_tokens": args.max_new_tokens,
        "batch": args.batch, "max_wait_ms": args.max_wait_ms, "sections": sections, "waited": waited,
        "others": others, "quiet_cores": args.quiet_cores, "max_other": args.max_other_cores, "retries": args.retries,
    }

    def measure(label: str, fn, other_cores):
        """Run a measurement after a quiet moment; if other users still took more than --max-other-cores
        during it, run it again (up to --retries times) and keep the least disturbed run."""
        best = None
        for attempt in range(args.retries + 1):
            if args.quiet_timeout > 0:
                waited[label] = waited.get(label, 0.0) + wait_quiet(args.quiet_cores, 3.0, args.quiet_timeout, log)
            result = fn()
            other = other_cores(result)
            others.setdefault(label, []).append(other)
            if best is None or other < best[1]:
                best = (result, other)
            if other <= args.max_other_cores or args.quiet_timeout <= 0:
                break
            log(f"{label}: other users took {other:.2f} cores during the measurement"
                + (": measuring again" if attempt < args.retries else ": keeping the least disturbed run"))
        return best[0]

    job_ids: list[str] = []
    procs: dict[str, Proc] = {}
    memory: list[tuple[str, str, str]] = []
    try:
        log("starting the API")
        began = time.perf_counter()
        api, url = start_api(env, log_dir)
        procs["api"] = api
        memory.append(("API (uvicorn, 1 process)", "right after start (healthz answers)", rss(api)))
        log(f"API at {url} in {time.perf_counter() - began:.1f}s; starting the tiny worker")
        worker = procs["tiny"] = start_worker(TINY, env, log_dir, args.tiny_threads)
        wait_ready(rclient, worker, TINY)
        memory.append((f"worker {TINY} (demo blip-base, tiny)", "ready, idle", rss(worker)))

        # --- tiny model: the three modes ---------------------------------------------------------
        log("tiny: raw loop and one-per-forward (in process)")
        t_raw, t_single = measure(
            "tiny in-process",
            lambda: in_process(tiny, tiny_images, args.batch, args.tiny_threads, args.max_new_tokens, args.tiny_jobs),
            lambda r: max(m.cpu.other_cores for m in r))
        log("tiny: vlmq")

        def tiny_vlmq() -> Mode:
            mode, _ = loadgen_mode(url, rclient, TINY, tiny_blobs[:16], args.clients, args.max_new_tokens,
                                   [api, worker], args.batch, args.tiny_seconds, run_dir)
            return mode

        t_vlmq = measure("tiny vlmq", tiny_vlmq, lambda m: m.cpu.other_cores)
        sections.append(
            [(f"## Throughput, tiny demo model (demo blip-base: 2 layers, 32 px; {args.tiny_threads} torch thread; "
              f"model time is small, so this measures the service pipeline)"), ""]
            + mode_table([t_raw, t_single, t_vlmq], t_raw, t_single)
            + ["", "Batch sizes in the vlmq mode (from /metrics `vlmq_batch_size`, delta over the run):",
               batch_line(t_vlmq)])

        # --- service overhead ----------------------------------------------------------------------
        pure = pure_model_times(tiny, images, args.max_new_tokens, args.tiny_threads)
        log(f"tiny: service overhead ({args.overhead_jobs} sequential jobs)")

        def overhead_run() -> dict:
            spy = start_py_spy(worker.pid, profile_dir / "worker-overhead.txt", 15) if args.profile else None
            ov, ids = overhead_mode(url, rclient, TINY, blobs, pure, args.overhead_jobs, args.max_new_tokens,
                                    [api, worker])
            if spy is not None:
                spy.wait()
            job_ids.extend(ids)
            return ov

        ov = measure("overhead", overhead_run, lambda o: o["cpu"].other_cores)
        log("bare Celery round trip (same Redis)")
        bare_worker = spawn("bare-celery", [sys.executable, str(HERE / "bare_celery.py"), "worker", "--redis-url",
                                            args.redis_url], env, log_dir)
        procs["bare-celery"] = bare_worker
        time.sleep(3)
        celery_rtt = bare_celery.round_trips(args.redis_url, args.overhead_jobs)
        procs.pop("bare-celery").stop()
        ratio = pct(ov["overhead_predict"], 50) / pct(celery_rtt, 50)

        def row(label: str, key: str, note: str = "") -> str:
            return f"| {label} | {fmt(pct(ov[key], 50))} | {fmt(pct(ov[key], 99))} | {note} |"

        sections.append([
            (f"## Service overhead per job (tiny model, 1 client, one job at a time, {args.overhead_jobs} jobs; "
             f"CPU cores this run / others: {ov['cpu'].mine_cores:.2f} / {ov['cpu'].other_cores:.2f})"), "",
            "| ms per job | p50 | p99 | what |", "|---|---:|---:|---|",
            row("**overhead = (completed_at − created_at) − batch predict time**", "overhead_predict",
                "headline: server-side, the model call excluded"),
            row("overhead incl. in-predict hooks = (completed_at − created_at) − pure model time", "overhead_pure",
                "also counts token streaming / cancel checks inside generate"),
            row("queue: started_at − created_at", "queue",
                "broker delivery, the batch's idle wait, record read, image load + decode, processor, claim"),
            row("after start, outside predict: (completed_at − started_at) − predict", "after_start",
                "output validation, finish script (image load, decode and processor come before the claim)"),
            row("hooks inside predict: predict − pure model time", "hooks", "token streamer + cancel checks"),
            row("batch predict time (worker, vlmq_batch_seconds)", "predict"),
            row("pure model time (adapter.predict in process, no hooks)", "pure"),
            row("server end-to-end: completed_at − created_at", "e2e"),
            row("client round trip (POST with Prefer: wait=30 until the answer)", "client"),
            row("client − server end-to-end", "http",
                "HTTP, parsing, validation, image decode before created_at; Prefer-wait wake-up and answer"),
            (f"| calibration: a bare Celery round trip on the same Redis | {fmt(pct(celery_rtt, 50))} | "
             f"{fmt(pct(celery_rtt, 99))} | benchmarks/bare_celery.py: send_task, a solo worker writes one key |"),
            "",
            "Where the queue time goes (means per job, ms; the worker's `vlmq_batch_stage_seconds` over the run):",
            "",
            "| step | mean ms |", "|---|---:|",
            *[f"| {label} | {ov['stages'][stage]:.2f} |" for stage, label in (
                ("images", "records read, image read from the blob store, JPEG decode at the model's scale"),
                ("preprocess", "the processor (`adapter.prepare`)"),
                ("claim", "the claim script"))],
            (f"| the rest: API after `created_at` (blob write, admission script), broker delivery, flush, hand-off "
             f"to the batch thread | {statistics.mean(ov['queue']) - sum(ov['stages'].values()):.2f} |"),
            f"| queue (mean) | {statistics.mean(ov['queue']):.2f} |",
            "",
            (f"Target: overhead p50 ≤ 2x a bare Celery round trip: **{ratio:.2f}x**; hooks inside predict ≤ 10% of "
             f"the pure model time: **{pct(ov['hooks'], 50) / pct(ov['pure'], 50):.1%}** (p50)."),
            "",
            ("Method: every job is submitted alone (the next one after the previous answer), so each batch holds "
             "exactly one job. `created_at` is stamped by the API when it builds the record (after parsing and "
             "image checks), `started_at` by the worker's claim script, `completed_at` by its finish script (all "
             "`time.time()` on this one machine, read from the job hash in Redis). The batch predict time is the "
             "increase of the worker's `vlmq_batch_seconds` sum (its Redis hash, the /metrics source) across the "
             "job: the duration of `adapter.predict` for the job's batch. The pure model time is the same adapter "
             "run in the benchmark process on the same decoded image without the worker's hooks (best of 3, same "
             "thread count)."),
        ] + profile_lines(profile_dir / "worker-overhead.txt", "worker during the overhead run"))
        memory.append((f"worker {TINY}", f"after {len(job_ids)} jobs", rss(worker)))

        # --- batch filling: a backlog queued before the worker starts -----------------------------------
        worker.stop()
        procs.pop("tiny")
        if args.quiet_timeout > 0:
            waited["drain"] = wait_quiet(args.quiet_cores, 3.0, args.quiet_timeout, log)
        log(f"tiny: drain a backlog of {args.drain_jobs} jobs")

        def start() -> Proc:
            procs["tiny"] = start_worker(TINY, env, log_dir, args.tiny_threads)
            return procs["tiny"]

        drain, ids = drain_test(url, rclient, TINY, blobs, args.drain_jobs, args.max_new_tokens, start)
        worker = procs["tiny"]
        job_ids += ids
        d = drain["delta"]
        sections.append([
            (f"## Batch filling with a backlog (tiny model; {args.drain_jobs} jobs queued before the worker starts, "
             f"max_batch_size {args.batch}: ideal {-(-args.drain_jobs // args.batch)} batches of {args.batch})"), "",
            "| batches | mean size | sizes (from /metrics buckets) | drain s (first start to last finish) |",
            "|---:|---:|---|---:|",
            (f"| {d['batches']} | {d['mean']:.2f} | {', '.join(f'{k}: {v}' for k, v in d['buckets'].items())} | "
             f"{drain['span']:.2f} |")])

        worker.stop()
        procs.pop("tiny")

        # --- full-size model ------------------------------------------------------------------------------
        if full is not None:
            log(f"full-size BLIP-base: raw loop and one-per-forward in process ({args.threads} threads)")
            raw, single = measure(
                "full in-process",
                lambda: in_process(full, images, args.batch, args.threads, args.max_new_tokens, single_images),
                lambda r: max(m.cpu.other_cores for m in r))
            log("full-size BLIP-base: worker")
            worker = procs["full"] = start_worker(FULL, env, log_dir, args.threads)
            load_s = wait_ready(rclient, worker, FULL, timeout=300)
            memory.append((f"worker {FULL} (BLIP-base full size, 224M params)", "ready, idle", rss(worker)))
            log(f"full-size BLIP-base: vlmq ({args.clients} clients)")

            def full_vlmq() -> Mode:
                mode, ids = vlmq_mode(url, rclient, FULL, blobs, args.clients, args.max_new_tokens, [api, worker],
                                      args.batch)
                job_ids.extend(ids)
                return mode

            vlmq = measure("full vlmq", full_vlmq, lambda m: m.cpu.other_cores)
            memory.append((f"worker {FULL}", f"after {args.images + 1} jobs", rss(worker)))
            procs.pop("full").stop()
            params = bench_models.model_params(full)
            sections.insert(0, [
                (f"## Throughput, full-size BLIP-base (default `BlipConfig()`: ViT-B/16 384 px + BERT-base decoder, "
                 f"{params / 1e6:.0f}M params, random weights, float32; {args.threads} torch threads in every mode)"),
                ""]
                + mode_table([raw, single, vlmq], raw, single)
                + ["", "Targets:"] + targets(raw, single, vlmq)
                + ["", "Batch sizes in the vlmq mode (from /metrics `vlmq_batch_size`, delta over the run):",
                   batch_line(vlmq), "",
                   (f"Method: raw loop and one-per-forward run in the benchmark process (processor + `generate` + "
                    f"decode, exactly what the blip_caption adapter does), after one untimed warm-up call; no "
                    f"service process is busy meanwhile (the API idles). vlmq: one API process and one worker "
                    f"(`VLMQ_TORCH_THREADS={args.threads}`, max_batch_size {args.batch}, max_wait_ms "
                    f"{args.max_wait_ms}, loaded in {load_s:.0f} s), one untimed warm-up job, then {args.clients} "
                    f"asyncio clients (`vlmq.client.AsyncClient`, multipart upload, `Prefer: wait=60`) share the "
                    f"{args.images} images: each submits the next one when its job ended. images/s = images / wall "
                    f"time from the first submit to the last answer; latency = client-side submit-to-answer. CPU: "
                    f"cores busy with this benchmark's processes / with other users of the machine (if the second "
                    f"is not ~0, the run was disturbed).")])
        memory.append(("API", "at the end", rss(api)))
        sections.append(["## Memory (resident set size, psutil, MiB)", "", "| process | when | RSS MiB |",
                         "|---|---|---:|"] + [f"| {a} | {b} | {c} |" for a, b, c in memory])
    finally:
        for proc in list(procs.values())[::-1]:
            proc.stop()
        try:
            clean_jobs(rclient, sorted({i for i in job_ids if i} | set(model_job_ids(rclient, models))))
            clean_models(rclient, models)
        except redis.RedisError as exc:
            log(f"cleanup failed: {exc}")
    text = report(ctx)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
