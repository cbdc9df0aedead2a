"""Full-size BLIP-base in each precision the registry offers: load time, memory, latency.

    python benchmarks/precision.py                       # every variant this machine can run
    python benchmarks/precision.py --variants float32 8bit --batch 8

Each variant is a registry `ModelSpec` (`dtype`, `quantization`) loaded through the worker's own
path (`blip_caption` adapter, `setup()` = `from_pretrained` with tasks/precision.py's arguments),
then run on real photos with greedy decoding, 20 new tokens per image (the model never stops
early: benchmarks/bench_models.py). Per variant: load seconds; weights memory
(`get_memory_footprint()`); peak memory while running a batch (CUDA: `max_memory_allocated`; CPU:
the process's peak RSS, which only grows, so read it in variant order); seconds per image at batch 1
(mean of --repeats calls after one warm-up) and at --batch. A variant this machine cannot run
(8-bit / 4-bit without CUDA) prints the worker's own start-up error instead of numbers.
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import time
from pathlib import Path

import torch
from bench_models import MAX_NEW_TOKENS, full_blip, photos  # this folder is on sys.path (a script)

from vlmq.jobtypes.caption import CaptionParams
from vlmq.registry import ModelSpec
from vlmq.tasks.adapters.base import GenerationHooks, SetupError, WorkItem
from vlmq.tasks.adapters.blip_caption import BlipCaptionAdapter

CACHE = Path(__file__).resolve().parent / ".cache"
VARIANTS = {  # name -> (dtype, quantization)
    "float32": ("float32", None),
    "bfloat16": ("bfloat16", None),
    "float16": ("float16", None),
    "8bit": ("float16", "8bit"),
    "4bit": ("float16", "4bit"),
}
CPU_DEFAULT = ["float32", "bfloat16", "8bit"]  # 8bit: shows the start-up refusal without CUDA


def _peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(adapter: BlipCaptionAdapter, images: list, repeats: int) -> float:
    """Seconds per image, the mean over `repeats` calls on these images."""
    items = [WorkItem(job_id=str(i), image=image, params=CaptionParams(max_new_tokens=MAX_NEW_TOKENS))
             for i, image in enumerate(images)]
    hooks = GenerationHooks()
    adapter.run(items, hooks)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = adapter.run(items, hooks)
        assert all(isinstance(o, dict) for o in out), out
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / len(images)


def measure(name: str, folder: Path, device: str, batch: int, repeats: int) -> str:
    dtype, quantization = VARIANTS[name]
    spec = ModelSpec(name=f"bench-{name.lower()}", adapter="blip_caption", source=str(folder),
                     tasks=("caption",), dtype=dtype, quantization=quantization, device=device)
    adapter = BlipCaptionAdapter(spec, str(folder))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        adapter.setup()
    except SetupError as exc:
        return f"| {name} | not run: {exc} | | | | |"
    load_s = time.perf_counter() - start
    weights = adapter.model.get_memory_footprint() / 2**20
    _, _, images = photos(batch)
    one = _run(adapter, images[:1], repeats)
    many = _run(adapter, images, 1)
    peak = _peak_mib(device)
    del adapter
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return f"| {name} | {load_s:.1f} | {weights:,.0f} | {peak:,.0f} | {one:.3f} | {many:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls at batch 1")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    variants = args.variants or (list(VARIANTS) if device == "cuda" else CPU_DEFAULT)
    folder = full_blip(CACHE)
    card = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'CPU'}, {args.threads} threads"
    print(f"Full-size BLIP-base (default BlipConfig, random weights), {device}: {card}; torch {torch.__version__}; "
          f"greedy, {MAX_NEW_TOKENS} new tokens per image\n")
    print(f"| variant | load s | weights MiB | peak MiB ({'CUDA allocated' if device == 'cuda' else 'process RSS'})"
          f" | s/image, batch 1 | s/image, batch {args.batch} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in variants:
        print(measure(name, folder, device, args.batch, args.repeats), flush=True)


if __name__ == "__main__":
    main()
