"""Offline demo models: tiny, real-architecture models with random (seeded) weights.

`build_demo_models(dest)` writes one folder per demo model under `dest` (the registry's
`demo:<name>` sources resolve to ``<data_dir>/demo-models/<name>``). Every folder is a normal
`save_pretrained` checkpoint (config, safetensors weights, processor, tokenizer), so the adapters
load it through the very same `from_pretrained` path as a hub model. Nothing is downloaded: the
tokenizers are built here from a small English vocabulary, so even the gibberish that random
weights produce decodes to words.

Each folder is written into a temporary sibling, completed by a marker file (`.vlmq-demo`, holding
the build version) and then renamed into place: a folder with a current marker is complete and is
skipped, so building is idempotent and an interrupted build never leaves a half model behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Bump when the demo models change: folders built by another version are rebuilt.
BUILD_VERSION = "3"
MARKER = ".vlmq-demo"

# --- vocabularies ---------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return text.split()


WORDS: tuple[str, ...] = tuple(
    _split("""
    a an the this that these those some many few two three four one of in on at by with from to
    for near under over above below behind beside between inside outside next into onto up down
    and or but while is are was be being has have holding wearing sitting standing lying walking
    running looking eating playing riding flying smiling jumping swimming sleeping reading waiting
    man woman person people boy girl child children baby player players crowd family couple group
    astronaut pilot chef doctor student teacher farmer rider skier surfer
    cat cats kitten dog dogs puppy bird birds horse horses cow cows sheep elephant giraffe zebra bear
    fish duck monkey tiger lion mouse rabbit animal animals
    car cars truck bus train bike bicycle motorcycle boat plane airplane rocket helicopter road street
    sign light traffic bridge building house tower city town park field beach ocean sea river lake
    mountain hill forest tree trees grass flower flowers garden sky cloud clouds sun moon snow rain
    water sand rock rocks wall window door roof floor room kitchen table chair couch bed desk
    shelf lamp clock television computer laptop phone keyboard screen book books paper bag box
    cup mug coffee tea plate bowl spoon fork knife bottle glass pizza cake bread sandwich banana
    apple orange fruit food dinner lunch breakfast
    shirt hat helmet suit jacket dress shoes glasses tie umbrella flag ball kite frisbee racket
    bat glove skateboard surfboard skis board toy toys teddy picture photo image painting
    red blue green yellow white black brown gray grey orange pink purple gold silver dark bright
    colorful small large big little tall short long old young new wooden metal plastic empty full
    open closed sunny cloudy snowy wet dry hot cold happy
    front back side top bottom left right middle center corner edge background foreground
    close view shot closeup
    very two three four five six seven eight nine ten several
    yes no not it its his her their there here what where who how why which when
    cute funny pretty beautiful nice
    day night morning evening space earth station
    """)
)
WORDS = tuple(dict.fromkeys(WORDS))  # unique, in order
PUNCTUATION = (".", ",", "?", "!", "'", "-", ":", ";", "(", ")")
DIGITS = tuple(str(i) for i in range(10))

#: Answers of the ViLT demo classifier: plausible VQA-v2 style answers.
VQA_ANSWERS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["yes", "no"]
        + [str(i) for i in range(21)]
        + _split("""
        red blue green yellow white black brown gray orange pink purple gold silver tan beige
        dog cat bird horse cow sheep elephant giraffe zebra bear fish duck teddy bear
        man woman boy girl person people child baby astronaut player
        car truck bus train bike motorcycle boat airplane plane rocket
        pizza cake sandwich banana apple orange hot dog donut coffee tea water wine beer
        table chair couch bed desk bench shelf floor wall window door grass sand snow
        sky water ocean beach street road field park kitchen bathroom bedroom living room city
        tennis baseball soccer frisbee skiing surfing skateboarding kite
        left right top bottom middle front back
        sitting standing walking running eating sleeping playing flying riding smiling
        day night sunny cloudy rain summer winter spring fall
        wood metal plastic glass paper cloth leather
        round square rectangle circle
        nothing none unknown many several lots
        happy sad cold hot big small large
        helmet hat glasses tie shirt suit jacket umbrella flag
        clock phone laptop tv computer book cup mug bowl plate knife fork spoon bottle
        tree trees flowers mountain mountains hill river lake cloud clouds sun moon
        """)
        + [
            "white and black",
            "black and white",
            "red and white",
            "blue and white",
            "on table",
            "in kitchen",
            "on street",
            "on couch",
            "on bed",
            "in sky",
            "in water",
            "on grass",
            "space suit",
            "coffee cup",
            "tabby",
            "orange and black",
            "looking at camera",
            "nasa",
            "usa",
            "american",
            "flag",
            "space",
            "outer space",
            "earth",
            "morning",
            "afternoon",
            "evening",
            "noon",
            "10:00",
            "1:00",
            "2:00",
            "3:00",
            "fork and knife",
        ]
        + [f"{i}0" for i in range(3, 10)]
        + ["100", "1000", "0.5", "half", "2 people", "1 person"]
    )
)

_CORPUS_TEMPLATES = (
    "a {0} {1} with a {2} .",
    "the {0} is {1} on the {2} .",
    "{0} {1} {2} in the {3} ?",
    "detect {0} ; {1}",
    "answer en what is the {0} {1} ?",
    "caption en a {0} of {1} {2}",
)


def _corpus() -> list[str]:
    """Sentences for training subword tokenizers: every word often, in common patterns."""
    words = list(WORDS)
    n = len(words)
    sentences = [" ".join(words[i : i + 8]) for i in range(0, n, 8)]
    for i in range(n):
        picks = [words[(i * k + 3 * k) % n] for k in range(1, 5)]
        sentences.append(_CORPUS_TEMPLATES[i % len(_CORPUS_TEMPLATES)].format(*picks))
    sentences += [" ".join(words)] * 3 + ["0 1 2 3 4 5 6 7 8 9 10 100 ! ? . , : ; ' - ( )"] * 3
    return sentences


# --- the tokenizers ------------------------------------------------------------------------


def _bert_tokenizer(model_max_length: int, bos_token: str | None = None) -> Any:
    """A WordPiece tokenizer over whole words (BLIP and ViLT use BERT's)."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokens = specials + list(PUNCTUATION) + list(DIGITS) + [w for w in WORDS if w not in DIGITS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    kwargs: dict[str, Any] = {"model_max_length": model_max_length}
    if bos_token:
        kwargs["bos_token"] = bos_token
    return BertTokenizer(vocab=vocab, do_lower_case=True, **kwargs)


def _gemma_tokenizer() -> Any:
    """A Gemma BPE (byte fallback) tokenizer trained on the demo corpus; PaliGemma adds its tokens."""
    from transformers import GemmaTokenizer

    base = GemmaTokenizer()
    tokenizer = base.train_new_from_iterator(_corpus(), vocab_size=1024, show_progress=False)
    tokenizer.padding_side = "left"
    return tokenizer


LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _llava_tokenizer() -> Any:
    """A word-level tokenizer with ChatML specials: decoding joins words with spaces."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>"]
    roles = ["system", "user", "assistant"]
    tokens = specials + roles + list(PUNCTUATION) + list(DIGITS) + list(WORDS) + ["describe"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        model_max_length=512,
        padding_side="left",
        chat_template=LLAVA_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<image>"]})
    return tokenizer


# --- the models ----------------------------------------------------------------------------

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _blip_parts(hidden: int, layers: int, image_size: int) -> tuple[Any, Any]:
    from transformers import BlipConfig, BlipImageProcessorPil, BlipProcessor

    tokenizer = _bert_tokenizer(model_max_length=512, bos_token="[DEC]")
    processor = BlipProcessor(
        BlipImageProcessorPil(
            size={"height": image_size, "width": image_size}, image_mean=_CLIP_MEAN, image_std=_CLIP_STD
        ),
        tokenizer,
    )
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "encoder_hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "projection_dim": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "max_position_embeddings": 512,  # as the real BLIP: room for the longest caption vlmq allows
        "initializer_range": 0.2,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    vision = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "projection_dim": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 8,
        "initializer_range": 0.2,
    }
    config = BlipConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=hidden,
        image_text_hidden_size=hidden,
        tie_word_embeddings=False,
    )
    return config, processor


def _build_blip_caption(hidden: int, layers: int, image_size: int) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        from transformers import BlipForConditionalGeneration

        config, processor = _blip_parts(hidden, layers, image_size)
        model = BlipForConditionalGeneration(config)
        _finish(model, processor, folder, max_new_tokens=20)

    return build


def _build_blip_vqa(folder: Path) -> None:
    from transformers import BlipForQuestionAnswering

    config, processor = _blip_parts(hidden=32, layers=2, image_size=32)
    model = BlipForQuestionAnswering(config)
    _finish(model, processor, folder, max_new_tokens=10)


def _build_vilt(folder: Path) -> None:
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessorPil, ViltProcessor

    tokenizer = _bert_tokenizer(model_max_length=40)
    processor = ViltProcessor(ViltImageProcessorPil(size={"shortest_edge": 64}, size_divisor=16), tokenizer)
    id2label = dict(enumerate(VQA_ANSWERS))
    config = ViltConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        image_size=64,
        patch_size=16,
        max_image_length=-1,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )
    model = ViltForQuestionAnswering(config)
    _finish(model, processor, folder)


def _build_paligemma(folder: Path) -> None:
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    image_size, patch = 32, 8
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = (image_size // patch) ** 2
    processor = PaliGemmaProcessor(image_processor, _gemma_tokenizer())  # adds <image>, <locNNNN>, <segNNN>
    tokenizer = processor.tokenizer
    vocab_size = -(-len(tokenizer) // 64) * 64
    text = {
        "model_type": "gemma",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 1024,  # prompt + the longest generation vlmq allows
        "initializer_range": 0.2,
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch,
    }
    config = PaliGemmaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=processor.image_token_id,
        projection_dim=32,
        hidden_size=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = PaliGemmaForConditionalGeneration(config)
    _finish(model, processor, folder, max_new_tokens=32)
    from vlmq.tasks.adapters._paligemma_masks import write_random

    write_random(folder / "vae-oid.npz", seed=5)  # segmentation's mask decoder: the real layout, random weights


def _build_llava(folder: Path) -> None:
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    image_size, patch = 32, 8
    tokenizer = _llava_tokenizer()
    processor = LlavaProcessor(
        CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=_CLIP_MEAN,
            image_std=_CLIP_STD,
        ),
        tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    text = {
        "model_type": "llama",
        "vocab_size": -(-len(tokenizer) // 64) * 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 512,
        "initializer_range": 0.2,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch,
    }
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=processor.image_token_id,
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlavaForConditionalGeneration(config)
    _finish(model, processor, folder, max_new_tokens=32)


def _finish(model: Any, processor: Any, folder: Path, max_new_tokens: int | None = None) -> None:
    """Generation defaults that make sense for a demo, then `save_pretrained` of model and processor."""
    model.eval()
    if max_new_tokens is not None and getattr(model, "generation_config", None) is not None:
        gen = model.generation_config
        gen.max_new_tokens = max_new_tokens
        text = model.config.get_text_config()
        for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            if getattr(gen, key, None) is None and getattr(text, key, None) is not None:
                setattr(gen, key, getattr(text, key))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


#: name (a folder under dest, as in `demo:<name>`) -> (seed, builder)
DEMO_MODELS: dict[str, tuple[int, Callable[[Path], None]]] = {
    "blip-base": (1, _build_blip_caption(hidden=32, layers=2, image_size=32)),
    "blip-large": (2, _build_blip_caption(hidden=48, layers=4, image_size=48)),
    "blip-vqa": (3, _build_blip_vqa),
    "vilt-vqa": (4, _build_vilt),
    "paligemma": (5, _build_paligemma),
    "llava-chat": (6, _build_llava),
    # the same architecture at two "training steps": different seeds, different weights
    "llava-ft/checkpoint-100": (100, _build_llava),
    "llava-ft/checkpoint-200": (200, _build_llava),
}


def _marker_text(name: str, seed: int) -> str:
    return json.dumps({"name": name, "version": BUILD_VERSION, "seed": seed}, sort_keys=True)


def is_built(folder: Path) -> bool:
    """Whether `folder` holds a complete demo model of the current build version."""
    marker = Path(folder) / MARKER
    try:
        return json.loads(marker.read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def demo_model_dirs(dest: Path) -> list[Path]:
    """The folders `build_demo_models(dest)` writes, in build order."""
    return [Path(dest) / name for name in DEMO_MODELS]


def build_demo_model(name: str, dest: Path, force: bool = False) -> bool:
    """Build one demo model into ``dest/name``; False when it was already complete (and not forced)."""
    import torch

    seed, builder = DEMO_MODELS[name]
    folder = Path(dest) / name
    if not force and is_built(folder):
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]), _quiet():  # deterministic weights, the caller's RNG untouched
            torch.manual_seed(seed)
            builder(tmp)
        (tmp / MARKER).write_text(_marker_text(name, seed))  # written last: the folder is complete
        _readable(tmp)
        if not force and is_built(folder):  # another process finished it meanwhile: keep that one
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not is_built(folder):  # not another process finishing the same build first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or load reports from transformers while building."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _readable(folder: Path) -> None:
    """mkdtemp makes a private folder: open it like any other (workers may run as another user)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build_demo_models(dest: Path, force: bool = False) -> list[Path]:
    """Make sure every demo model is complete under `dest`; returns all their folders, in order.

    A folder that is already complete (marker of the current build version) is skipped unless
    `force`: calling it twice writes nothing the second time. `build_demo_model` tells, per model,
    whether it was written.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in DEMO_MODELS:
        build_demo_model(name, dest, force=force)
    return demo_model_dirs(dest)
