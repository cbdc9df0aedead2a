"""Model groups: loads against the offline optimum, throughput against pinned workers, a cold compare,
and a group worker's peak memory, with real processes.

    python benchmarks/groups.py [--jobs 400] [--zipf 1.0] [--redis-db 10]

Models: 40 checkpoints of the tiny demo Llava (`checkpoint-100` ... `checkpoint-4000`, each its own
weights), a group of them with `max_loaded = 4`; for memory, 8 checkpoints of a wider BLIP (~50 MB of
weights each, so that weights, not libraries, are what grows) in a group with `max_loaded = 2`.

1. Pinned baseline: 4 pinned workers on the 4 most popular checkpoints, warmed with 8 jobs each, then
   `--jobs` caption jobs drawn Zipf over those 4, submitted at once: jobs per second from the first
   submit to the last result.
2. Loads: 2 group workers, `--jobs` jobs drawn Zipf over the 40, arriving open loop (Poisson) at each
   rate of `--rates` (20 and 40 jobs/s), the same sequence each time: the loads both workers made
   (their counters) against Belady's
   (the optimal offline policy: on a miss, evict the member used farthest in the future) on the same
   sequence with one cache of 8 (both workers' slots: a lower bound for two caches of 4), and LRU and
   vlmq's least-used rule (tasks/holdings.py) simulated the same way. vlmq serves what is queued, not one job at a time in arrival order, so it
   can need fewer loads than a policy that does.
3. Throughput: the same 2 group workers (warm from 2.), `--jobs` Zipf jobs over the 40 submitted at
   once (a new draw), against 1.
4. Cold compare: a fresh group worker holding nothing, a `compare` of 3 checkpoints: answer time; the
   same compare again on a new image (warm).
5. Memory: one group worker (`max_loaded = 2`) over the 8 wide checkpoints, 24 jobs one after another
   cycling through them (a load and an eviction each): its peak resident memory (VmHWM) above its
   fixed cost (resident memory after its first load, less that model's weights), in weights of one model.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_procs import Proc, spawn
from benchmarks.stack import Stack
from vlmq.fleet import Fleet
from vlmq.tasks.demo import build_demo_models

GROUP, WIDE = "bench", "wide"
CHECKPOINTS, WIDE_CHECKPOINTS = 40, 8
MAX_LOADED, WIDE_MAX_LOADED = 4, 2
FINAL = (b"succeeded", b"failed", b"canceled", b"aborted")
HEARTBEAT_WAIT = 4.0  # one group-worker heartbeat: its holdings, as the fleet sees them


# --- models ---------------------------------------------------------------------------------------

def build_models(folder: Path) -> Path:
    """The 40 tiny checkpoints, the 8 wide ones, and a registry naming them; the registry's path."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    demo = folder / "demo-models"
    build_demo_models(demo)
    runs = folder / "runs"
    source = demo / "llava-ft" / "checkpoint-100"
    weights = load_file(source / "model.safetensors")
    for i in range(1, CHECKPOINTS + 1):
        dest = runs / f"checkpoint-{i * 100}"
        shutil.copytree(source, dest)
        generator = torch.Generator().manual_seed(i)
        save_file({name: (t + 0.01 * torch.randn(t.shape, generator=generator, dtype=t.dtype)
                          if t.is_floating_point() else t).contiguous() for name, t in weights.items()},
                  dest / "model.safetensors", metadata={"format": "pt"})
    config = BlipConfig.from_pretrained(demo / "blip-base")
    text = config.text_config
    text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.num_attention_heads = 256, 4, 1024, 4
    text.encoder_hidden_size = config.vision_config.hidden_size
    processor = BlipProcessor.from_pretrained(demo / "blip-base")
    for i in range(1, WIDE_CHECKPOINTS + 1):
        torch.manual_seed(i)
        BlipForConditionalGeneration(config).eval().save_pretrained(folder / "wide" / f"checkpoint-{i}")
        processor.save_pretrained(folder / "wide" / f"checkpoint-{i}")
    registry = folder / "models.toml"
    registry.write_text(
        f'[checkpoints.{GROUP}]\ndir = "{runs}"\nadapter = "image_text_to_text"\ntasks = ["caption"]\n'
        f'max_batch_size = 4\n\n'
        f'[checkpoints.{WIDE}]\ndir = "{folder / "wide"}"\nadapter = "blip_caption"\ntasks = ["caption"]\n\n'
        f'[groups.{GROUP}]\ncheckpoints = "{GROUP}"\nmax_loaded = {MAX_LOADED}\n\n'
        f'[groups.{WIDE}]\ncheckpoints = "{WIDE}"\nmax_loaded = {WIDE_MAX_LOADED}\n'
    )
    return registry


# --- streams and the offline policies ---------------------------------------------------------------

def zipf_stream(members: list[str], n: int, s: float, seed: int) -> list[str]:
    weights = 1.0 / np.arange(1, len(members) + 1) ** s
    picks = np.random.default_rng(seed).choice(len(members), size=n, p=weights / weights.sum())
    return [members[i] for i in picks]


def belady_loads(sequence: list[str], capacity: int) -> int:
    """Loads of the optimal offline policy: on a miss with no room, evict the member used farthest ahead."""
    next_use: list[float] = [0.0] * len(sequence)
    seen: dict[str, int] = {}
    for i in range(len(sequence) - 1, -1, -1):
        next_use[i] = seen.get(sequence[i], float("inf"))
        seen[sequence[i]] = i
    held: dict[str, float] = {}
    loads = 0
    for i, member in enumerate(sequence):
        if member not in held:
            loads += 1
            if len(held) >= capacity:
                del held[max(held, key=held.get)]
        held[member] = next_use[i]
    return loads


def least_used_loads(sequence: list[str], capacity: int) -> int:
    """Loads of tasks/holdings.py's rule, one job at a time: evict the lowest use score (vlmq/fleet.py:
    the decayed job count, kept when a member leaves), ties to the least recently used."""
    from vlmq.fleet import HALF_LIFE_JOBS

    uses: dict[str, float] = {}  # every member's, held or not
    last: dict[str, int] = {}
    held: set[str] = set()
    loads = 0
    for t, member in enumerate(sequence):
        for other in uses:
            uses[other] *= 0.5 ** (1 / HALF_LIFE_JOBS)
        if member not in held:
            loads += 1
            if len(held) >= capacity:
                held.remove(min(held, key=lambda m: (uses[m], last[m])))
            held.add(member)
        uses[member] = uses.get(member, 0.0) + 1
        last[member] = t
    return loads


def lru_loads(sequence: list[str], capacity: int) -> int:
    held: dict[str, None] = {}
    loads = 0
    for member in sequence:
        if member in held:
            del held[member]
        else:
            loads += 1
            if len(held) >= capacity:
                del held[next(iter(held))]
        held[member] = None
    return loads


# --- jobs ----------------------------------------------------------------------------------------

def image_uri(seed: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def caption(model: str, image: str) -> dict:
    return {"type": "caption", "model": model, "image_url": image, "max_new_tokens": 8, "cache": False}


def submit_all(url: str, bodies: list[dict], at: list[float] | None = None) -> list[str]:
    """Submit every body (at its offset in seconds from now, with `at`); the job ids, in order."""
    start = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
        def one(i: int) -> str:
            if at is not None:
                time.sleep(max(0.0, start + at[i] - time.monotonic()))
            reply = client.post("/v1/jobs", json=bodies[i])
            reply.raise_for_status()
            return reply.json()["id"]

        return list(pool.map(one, range(len(bodies))))


def wait_all(stack: Stack, ids: list[str], timeout: float = 1800) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe = stack.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"vlmq:job:{job_id}", "status", "created_at", "started_at", "completed_at", "load_wait_ms")
        rows = pipe.execute()
        if all(row[0] in FINAL for row in rows):
            return [{"status": r[0].decode(), "created": float(r[1]), "started": float(r[2] or "nan"),
                     "completed": float(r[3]), "load_wait_ms": float(r[4]) if r[4] else None} for r in rows]
        time.sleep(0.25)
    raise SystemExit("jobs did not finish in time")


def throughput(rows: list[dict]) -> float:
    assert all(r["status"] == "succeeded" for r in rows), {r["status"] for r in rows}
    return len(rows) / (max(r["completed"] for r in rows) - min(r["created"] for r in rows))


# --- group workers ---------------------------------------------------------------------------------

def start_group_workers(stack: Stack, group: str, count: int) -> list[Proc]:
    procs = [spawn(f"group-{group}-{i}-{time.time_ns()}", [sys.executable, "-m", "vlmq.cli", "worker", "--group", group],
                   stack.env, stack.data_dir / "logs") for i in range(count)]
    fleet = Fleet(stack.redis)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pids = {w.pid for w in fleet.describe_groups([group])[group]}
        if all(p.pid in pids for p in procs):
            stack.procs += procs
            return procs
        for p in procs:
            if not p.alive():
                raise RuntimeError(p.tail())
        time.sleep(0.2)
    raise RuntimeError("group workers not up in time")


def group_counters(stack: Stack, group: str) -> tuple[int, int]:
    workers = Fleet(stack.redis).describe_groups([group])[group]
    return sum(w.loads for w in workers), sum(w.evictions for w in workers)


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


# --- the run --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the checkpoints' popularity.")
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rates", default="20,40", help="Arrival rates of the loads phase, jobs/s.")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="vlmq-groups-"))
    registry = build_models(folder)
    members = [f"{GROUP}@{i * 100}" for i in range(1, CHECKPOINTS + 1)]
    wide = [f"{WIDE}@{i}" for i in range(1, WIDE_CHECKPOINTS + 1)]
    env = {"VLMQ_MODELS_FILE": str(registry), "VLMQ_TORCH_THREADS": "1"}
    image = image_uri(0)
    report: dict[str, object] = {"jobs": args.jobs, "zipf": args.zipf, "checkpoints": CHECKPOINTS,
                                 "max_loaded": MAX_LOADED}

    top4 = members[:4]
    with Stack(models=top4, redis_db=args.redis_db, env=env) as stack:
        wait_all(stack, submit_all(stack.url, [caption(m, image) for m in top4 * 8]))  # warm, as the group is
        rows = wait_all(stack, submit_all(stack.url, [caption(m, image) for m in
                                                      zipf_stream(top4, args.jobs, args.zipf, args.seed)]))
        pinned = throughput(rows)
    report["pinned_jobs_per_s"] = round(pinned, 2)

    with Stack(models=[], redis_db=args.redis_db, env=env) as stack:
        start_group_workers(stack, GROUP, 2)
        # 2. loads, open loop (Poisson) at each of --rates, the same sequence
        sequence = zipf_stream(members, args.jobs, args.zipf, args.seed + 1)
        belady = belady_loads(sequence, 2 * MAX_LOADED)
        report["stream"] = {"distinct_members": len(set(sequence)), "belady_loads_8": belady,
                            "lru_loads_8": lru_loads(sequence, 2 * MAX_LOADED),
                            "least_used_loads_8": least_used_loads(sequence, 2 * MAX_LOADED)}
        for rate in (float(r) for r in args.rates.split(",")):
            before = group_counters(stack, GROUP)[0]
            gaps = np.random.default_rng(args.seed).exponential(1 / rate, size=len(sequence))
            rows = wait_all(stack, submit_all(stack.url, [caption(m, image) for m in sequence], list(np.cumsum(gaps))))
            assert all(r["status"] == "succeeded" for r in rows)
            loads = group_counters(stack, GROUP)[0] - before
            waits = [r["load_wait_ms"] for r in rows if r["load_wait_ms"]]
            report["stream"][f"at_{rate:g}_jobs_per_s"] = {
                "loads": loads, "loads_vs_belady": round(loads / belady, 2), "jobs_that_waited_for_a_load": len(waits),
                "load_wait_ms_p50": round(statistics.median(waits), 1) if waits else None,
                "queue_ms_p50": round(statistics.median((r["started"] - r["created"]) * 1000 for r in rows), 1),
            }
        # 3. throughput: a burst over the 40
        before = group_counters(stack, GROUP)[0]
        burst = zipf_stream(members, args.jobs, args.zipf, args.seed + 2)
        rows = wait_all(stack, submit_all(stack.url, [caption(m, image) for m in burst]))
        group = throughput(rows)
        report["burst"] = {"group_jobs_per_s": round(group, 2), "vs_pinned": round(group / pinned, 2),
                           "loads": group_counters(stack, GROUP)[0] - before,
                           "belady_loads_8": belady_loads(burst, 2 * MAX_LOADED)}
        # 4. a compare of 3 checkpoints on a cold group worker, then warm
        for proc in stack.procs[1:]:
            proc.stop()
        start_group_workers(stack, GROUP, 1)
        chosen = members[10:13]
        times = []
        for seed in (1, 2):
            body = {"type": "compare", "models": chosen, "image_url": image_uri(seed), "cache": False,
                    "task": {"type": "caption", "max_new_tokens": 8}}
            began = time.monotonic()
            with httpx.Client(base_url=stack.url, timeout=120) as client:
                job_id = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"}).json()["id"]
            (row,) = wait_all(stack, [job_id])
            times.append(time.monotonic() - began)
            assert row["status"] == "succeeded", row
        report["compare_3"] = {"cold_s": round(times[0], 2), "warm_s": round(times[1], 2)}
        # 5. memory: one group worker over the wide checkpoints, a load and an eviction per job
        for proc in stack.procs[1:]:
            proc.stop()
        (proc,) = start_group_workers(stack, WIDE, 1)
        wait_all(stack, submit_all(stack.url, [caption(wide[0], image)]))
        time.sleep(HEARTBEAT_WAIT)
        (worker,) = Fleet(stack.redis).describe_groups([WIDE])[WIDE]
        one = next(h.weights_bytes for h in worker.held if h.model == wide[0])
        fixed = memory(proc.pid)["VmRSS"] - one
        for i in range(24):
            wait_all(stack, submit_all(stack.url, [caption(wide[(i + 1) % len(wide)], image)]))
        peak = memory(proc.pid)["VmHWM"]
        loads, evictions = group_counters(stack, WIDE)
        report["memory"] = {"max_loaded": WIDE_MAX_LOADED, "weights_mib": round(one / 2**20, 1),
                            "fixed_mib": round(fixed / 2**20, 1), "peak_mib": round(peak / 2**20, 1),
                            "peak_above_fixed_in_models": round((peak - fixed) / one, 2),
                            "limit_in_models": WIDE_MAX_LOADED + 1, "loads": loads, "evictions": evictions}
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
