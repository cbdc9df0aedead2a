"""A deliberately slow captioner for tests that need a job to be running for a while (cancel,
deadlines, killed workers): the demo BLIP with a wider text decoder that never stops early."""

from __future__ import annotations

from pathlib import Path

import torch

SLOW_MODEL = "blip-slow"


def build_slow_blip(demo_models: Path, dest: Path) -> Path:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    if (dest / "config.json").is_file():
        return dest
    source = demo_models / "blip-base"
    config = BlipConfig.from_pretrained(source)
    text = config.text_config
    text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.num_attention_heads = 768, 12, 3072, 12
    text.encoder_hidden_size = config.vision_config.hidden_size
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
    model.generation_config.min_new_tokens = 10_000  # run to max_new_tokens, whatever it draws
    model.save_pretrained(dest)
    BlipProcessor.from_pretrained(source).save_pretrained(dest)
    return dest
