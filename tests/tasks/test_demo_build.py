"""The offline demo models: complete, loadable, deterministic, tiny, and built only once."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from vlmq.registry import DEFAULT_REGISTRY, DEMO_PREFIX
from vlmq.tasks.demo import (
    BUILD_VERSION,
    DEMO_MODELS,
    build_demo_model,
    build_demo_models,
    demo_model_dirs,
    is_built,
)
from vlmq.tasks.demo.build import MARKER


def test_every_demo_source_of_the_registry_is_built(demo_models):
    raw = tomllib.loads(DEFAULT_REGISTRY.read_text())
    sources = [m["source"] for m in raw["models"].values() if m["source"].startswith(DEMO_PREFIX)]
    sources += [c["dir"] for c in raw["checkpoints"].values() if c["dir"].startswith(DEMO_PREFIX)]
    assert sources
    for source in sources:
        assert (demo_models / source[len(DEMO_PREFIX) :]).is_dir(), source
    steps = sorted(p.name for p in (demo_models / "llava-ft").iterdir())
    assert steps == ["checkpoint-100", "checkpoint-200"]


def test_folders_are_complete_and_tiny(demo_models):
    for folder in demo_model_dirs(demo_models):
        assert is_built(folder)
        assert json.loads((folder / MARKER).read_text())["version"] == BUILD_VERSION
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert "processor_config.json" in names or "preprocessor_config.json" in names
        # PaliGemma's mask decoder has the real VQ-VAE's shapes (4.7 MB): only the model must be tiny
        size = sum(p.stat().st_size for p in folder.iterdir() if p.name != "vae-oid.npz")
        assert size < 5_000_000, f"{folder.name}: {size} bytes"
    assert not list(demo_models.glob(".*.tmp")) and not list(demo_models.glob("*/.*.tmp"))


def test_build_is_idempotent_fast_and_deterministic(demo_models, tmp_path):
    dest = tmp_path / "models"
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    written = build_demo_models(dest)
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is left alone
    assert written == demo_model_dirs(dest)

    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    assert build_demo_models(dest) == written  # built already: nothing is written again
    assert stamps == {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}

    # same seeds, same weights as the session's build
    for name in DEMO_MODELS:
        mine = load_file(dest / name / "model.safetensors")
        theirs = load_file(demo_models / name / "model.safetensors")
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name


def test_incomplete_folder_is_rebuilt_and_force_rebuilds_all(tmp_path):
    dest = tmp_path / "models"
    build_demo_models(dest)

    def written_by(call) -> set[str]:
        """The models whose folder `call` replaced: a file left in each folder is gone from those."""
        for folder in demo_model_dirs(dest):
            if folder.is_dir():
                (folder / "sentinel").touch()
        call()
        return {name for name in DEMO_MODELS if not (dest / name / "sentinel").exists()}

    (dest / "blip-vqa" / MARKER).unlink()  # as if a build had been interrupted
    (dest / "blip-vqa" / "model.safetensors").unlink()
    assert written_by(lambda: build_demo_models(dest)) == {"blip-vqa"}
    assert is_built(dest / "blip-vqa") and (dest / "blip-vqa" / "model.safetensors").is_file()

    (dest / "vilt-vqa" / MARKER).write_text(json.dumps({"version": "0"}))  # an older build
    assert build_demo_model("vilt-vqa", dest) is True
    assert build_demo_model("vilt-vqa", dest) is False
    assert written_by(lambda: build_demo_models(dest, force=True)) == set(DEMO_MODELS)


def test_checkpoints_differ_and_blip_large_is_larger(demo_models):
    a = load_file(demo_models / "llava-ft/checkpoint-100/model.safetensors")
    b = load_file(demo_models / "llava-ft/checkpoint-200/model.safetensors")
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)

    def params(name: str) -> int:
        return sum(t.numel() for t in load_file(demo_models / name / "model.safetensors").values())

    assert params("blip-large") > 1.5 * params("blip-base")
    base = json.loads((demo_models / "blip-base/config.json").read_text())
    large = json.loads((demo_models / "blip-large/config.json").read_text())
    assert large["text_config"]["num_hidden_layers"] > base["text_config"]["num_hidden_layers"]
    assert large["vision_config"]["hidden_size"] > base["vision_config"]["hidden_size"]


def test_paligemma_tokenizer_and_image_tokens(demo_models):
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    folder = demo_models / "paligemma"
    processor = AutoProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(["<image>", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>"])
    assert tokenizer.unk_token_id not in ids and len(set(ids)) == 5
    text = "<loc0012><loc0034><loc0567><loc0890> dog"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    model = PaliGemmaForConditionalGeneration.from_pretrained(folder)
    assert model.config.text_config.vocab_size >= len(tokenizer)
    assert model.config.image_token_id == processor.image_token_id
    vision = model.config.vision_config
    assert processor.image_seq_length == (vision.image_size // vision.patch_size) ** 2


def test_vilt_has_plausible_answers(demo_models):
    config = json.loads((demo_models / "vilt-vqa/config.json").read_text())
    labels = list(config["id2label"].values())
    assert len(labels) >= 200 and len(set(labels)) == len(labels)
    assert {"yes", "no", "2", "red", "dog"} <= set(labels)
    assert {int(i) for i in config["label2id"].values()} == {int(i) for i in config["id2label"]}


def test_llava_loads_through_the_auto_classes_with_a_chat_template(demo_models):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = demo_models / "llava-chat"
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
        {"role": "user", "content": [{"type": "text", "text": "what color?"}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.count("<image>") == 1 and text.endswith("<|im_start|>assistant\n")
    words = processor.tokenizer.decode(processor.tokenizer("a cat on the couch")["input_ids"])
    assert words == "a cat on the couch"


@pytest.mark.parametrize("name", ["blip-base", "blip-vqa", "vilt-vqa"])
def test_bert_tokenizers_match_the_text_config(demo_models, name):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_models / name)
    config = AutoConfig.from_pretrained(demo_models / name)
    text = config.get_text_config() if name != "vilt-vqa" else config
    assert text.vocab_size >= len(tokenizer)
    assert text.pad_token_id == tokenizer.pad_token_id
    if name != "vilt-vqa":
        assert text.sep_token_id == tokenizer.sep_token_id
        assert text.bos_token_id == tokenizer.convert_tokens_to_ids("[DEC]")
    assert (
        tokenizer.decode(tokenizer("a dog on the grass", add_special_tokens=False)["input_ids"])
        == "a dog on the grass"
    )
