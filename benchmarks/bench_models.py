"""The benchmark's models and images (helpers of benchmarks/throughput.py).

- `tiny_blip(cache)`: the demo `blip-base` (built by vlmq's own demo builder), copied with
  `min_new_tokens = max_new_tokens` in its generation config and the end token's output bias at
  -1e4 (see `_never_stop`), so random weights never stop early and every image costs the same
  number of decoding steps.
- `full_blip(cache)`: full-size BLIP-base shapes: the default `BlipConfig()` (ViT-B/16 at 384 px,
  12-layer BERT-base text decoder with cross-attention, text vocab 30,524, ~224M parameters),
  random weights (seed 0). Its tokenizer is the demo blip-base tokenizer (same special tokens and
  words) padded with filler word pieces up to BlipConfig's 30,524 entries, so the LM head has the
  real size and every id the random weights produce decodes. The image processor is the demo's
  (CLIP mean/std, PIL resize) at the full 384x384. Written once (~0.9 GB of safetensors) into the
  cache folder; a marker file says it is complete.
- `photos(n)`: n distinct real photos from skimage.data, resized to a variety of sizes and
  aspect ratios, as JPEG bytes (what a client uploads) and as the decoded RGB images (what the
  worker sees after decoding the upload).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

MAX_NEW_TOKENS = 20
FULL_VERSION = "3"
TINY_VERSION = "2"
MARKER = ".bench-ready"


def _ready(folder: Path, version: str) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def _fix_generation(folder: Path, max_new_tokens: int) -> None:
    path = folder / "generation_config.json"
    config = json.loads(path.read_text())
    config["max_new_tokens"] = max_new_tokens
    config["min_new_tokens"] = max_new_tokens  # random weights: no early EOS, same work per image
    config["do_sample"] = False
    config["num_beams"] = 1
    path.write_text(json.dumps(config, indent=2))


def _never_stop(model) -> None:
    """BLIP's `generate` runs its text decoder's own `generate` with that sub-model's generation config,
    so `min_new_tokens` in generation_config.json is not applied to it. Make the [SEP] (end) token's
    output bias -1e4 instead: random weights then never end a caption early, whatever the caller."""
    import torch

    sep = model.config.text_config.sep_token_id
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in ("text_decoder.cls.predictions.bias", "text_decoder.cls.predictions.decoder.bias"):
                param[sep] = -1e4


def demo_blip(cache: Path) -> Path:
    """The demo blip-base folder, built by vlmq's demo builder into `cache/demo-models`."""
    from vlmq.tasks.demo import build_demo_model

    dest = cache / "demo-models"
    build_demo_model("blip-base", dest)
    return dest / "blip-base"


def tiny_blip(cache: Path, max_new_tokens: int = MAX_NEW_TOKENS) -> Path:
    folder = cache / f"blip-tiny-min{max_new_tokens}"
    if _ready(folder, TINY_VERSION):
        return folder
    source = demo_blip(cache)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    from transformers import BlipForConditionalGeneration

    model = BlipForConditionalGeneration.from_pretrained(tmp)
    _never_stop(model)
    model.save_pretrained(tmp)
    _fix_generation(tmp, max_new_tokens)
    (tmp / MARKER).write_text(json.dumps({"version": TINY_VERSION}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def full_blip(cache: Path, max_new_tokens: int = MAX_NEW_TOKENS) -> Path:
    folder = cache / f"blip-base-full-min{max_new_tokens}"
    if _ready(folder, FULL_VERSION):
        return folder
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    demo = demo_blip(cache)
    demo_processor = BlipProcessor.from_pretrained(demo)
    demo_tokenizer = demo_processor.tokenizer
    vocab_size = BlipConfig().text_config.vocab_size  # 30524
    tokens = [t for t, _ in sorted(demo_tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    if len(tokens) > vocab_size:
        raise RuntimeError(f"demo tokenizer has {len(tokens)} tokens > {vocab_size}")
    tokens += [f"w{i}" for i in range(vocab_size - len(tokens))]
    tokenizer = BertTokenizer(
        vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True, model_max_length=512, bos_token="[DEC]"
    )
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    demo_size = demo_processor.image_processor
    processor = BlipProcessor(
        BlipImageProcessorPil(
            size={"height": 384, "width": 384}, image_mean=demo_size.image_mean, image_std=demo_size.image_std
        ),
        tokenizer,
    )
    dec = tokenizer.convert_tokens_to_ids("[DEC]")
    config = BlipConfig(
        text_config={
            "vocab_size": vocab_size,
            "bos_token_id": dec,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
    _never_stop(model)
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id, gen.eos_token_id = dec, tokenizer.pad_token_id, tokenizer.sep_token_id
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _fix_generation(tmp, max_new_tokens)
    params = sum(p.numel() for p in model.parameters())
    (tmp / MARKER).write_text(json.dumps({"version": FULL_VERSION, "params": params}))
    del model
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def model_params(folder: Path) -> int | None:
    try:
        return json.loads((folder / MARKER).read_text()).get("params")
    except (OSError, ValueError):
        return None


PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "moon", "coins", "clock",
)
# (long side, aspect w/h) per round over the photos: small to large, landscape and portrait
SHAPES = ((640, 1.0), (480, 4 / 3), (800, 3 / 4), (320, 16 / 9), (1024, 1.0), (560, 2 / 3))


def _bases(folder: Path | None) -> list:
    """The base photos: from skimage.data, or from `folder/<name>.jpg` (benchmarks/gpu_wheels.py
    writes them for a machine without scikit-image)."""
    from PIL import Image

    if folder is not None:
        return [(name, Image.open(folder / f"{name}.jpg").convert("RGB")) for name in PHOTOS]
    import numpy as np
    import skimage.data

    bases = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.dtype != np.uint8:
            array = (array * 255).astype(np.uint8)
        bases.append((name, Image.fromarray(array).convert("RGB")))
    return bases


def photos(n: int, folder: Path | None = None) -> tuple[list[str], list[bytes], list]:
    """(names, JPEG bytes, decoded RGB PIL images) of n distinct photos."""
    from PIL import Image

    bases = _bases(folder)
    names, blobs, images = [], [], []
    for i in range(n):
        name, base = bases[i % len(bases)]
        side, aspect = SHAPES[(i // len(bases)) % len(SHAPES)]
        extra = i // (len(bases) * len(SHAPES))  # more rounds: shift the size a little, still distinct
        side += 8 * extra
        w, h = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
        buffer = io.BytesIO()
        base.resize((w, h), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        names.append(f"{name}-{w}x{h}")
        blobs.append(data)
        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return names, blobs, images
