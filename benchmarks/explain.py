"""What `explain` costs over the plain caption: time per image and bytes per job, side by side.

    python benchmarks/explain.py [--images 8] [--repeats 3] [--models tiny full]

For the tiny demo BLIP and full-size BLIP-base shapes (random weights; benchmarks/bench_models.py:
20 new tokens per image, never an early end), the `blip_caption` adapter runs the same photos at
one batch as `caption` and as `explain`, interleaved (--repeats rounds after a warm-up). Per model:
seconds per image for each and the ratio; the time the worker then spends rendering `overlay.png`;
the output's JSON bytes per job; and the artifacts' bytes per job (`overlay.png`, and with `token_images` the per-token PNGs too), rendered as the
worker renders them, at each photo's own size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_models import MAX_NEW_TOKENS, full_blip, photos, tiny_blip  # this folder is on sys.path

from vlmq.jobtypes.caption import CaptionParams
from vlmq.jobtypes.explain import ExplainParams, render
from vlmq.registry import ModelSpec
from vlmq.tasks.adapters.base import GenerationHooks, WorkItem
from vlmq.tasks.adapters.blip_caption import BlipCaptionAdapter

CACHE = Path(__file__).resolve().parent / ".cache"


def measure(name: str, folder: Path, images: list, repeats: int) -> str:
    spec = ModelSpec(name="bench-blip", adapter="blip_caption", source=str(folder), tasks=["caption", "explain"],
                     max_batch_size=len(images))
    adapter = BlipCaptionAdapter(spec, str(folder))
    adapter.setup()
    caption = [WorkItem(f"c{i}", image, CaptionParams(max_new_tokens=MAX_NEW_TOKENS)) for i, image in enumerate(images)]
    explain = [WorkItem(f"e{i}", image, ExplainParams(max_new_tokens=MAX_NEW_TOKENS)) for i, image in enumerate(images)]
    adapter.run(caption, GenerationHooks())  # warm-up
    outputs = adapter.run(explain, GenerationHooks())
    times: dict[str, list[float]] = {"caption": [], "explain": []}
    for _ in range(repeats):
        for kind, items in (("caption", caption), ("explain", explain)):
            began = time.perf_counter()
            adapter.run(items, GenerationHooks())
            times[kind].append((time.perf_counter() - began) / len(items))
    plain = adapter.run(caption, GenerationHooks())
    out_bytes = statistics.mean(len(json.dumps(o)) for o in outputs)
    plain_bytes = statistics.mean(len(json.dumps(o)) for o in plain)
    began = time.perf_counter()
    overlay = statistics.mean(len(render(i.image, o, i.params)["overlay.png"]) for i, o in zip(explain, outputs,
                                                                                             strict=True))
    render_s = (time.perf_counter() - began) / len(images)
    tokens = ExplainParams(max_new_tokens=MAX_NEW_TOKENS, token_images=True)
    every = statistics.mean(sum(map(len, render(i.image, o, tokens).values())) for i, o in zip(explain, outputs,
                                                                                             strict=True))
    c, e = statistics.median(times["caption"]), statistics.median(times["explain"])
    return (f"| {name} | {c:.3f} | {e:.3f} | {e / c:.2f}x | {render_s:.3f} | {plain_bytes:,.0f} | {out_bytes:,.0f} | "
            f"{overlay / 1024:,.0f} KiB | {every / 1024:,.0f} KiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="photos, run as one batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=("tiny", "full"), default=["tiny", "full"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _names, _jpegs, images = photos(args.images)
    print(f"{args.images} photos at one batch, greedy, {MAX_NEW_TOKENS} new tokens each; "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}\n")
    print("| model | caption s/image | explain s/image | ratio | + overlay.png s/image | caption output bytes "
          "| explain output bytes | overlay.png per job | with token PNGs per job |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    builders = {"tiny": ("tiny demo BLIP", tiny_blip), "full": ("full-size BLIP-base", full_blip)}
    for key in args.models:
        name, build = builders[key]
        print(measure(name, build(CACHE), images, args.repeats), flush=True)


if __name__ == "__main__":
    main()
