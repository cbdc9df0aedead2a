"""The model adapters on the demo models (real architectures, random weights) and OpenCV's cascades."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch

from vlmq.fleet import EXIT_SETUP_FAILED
from vlmq.jobtypes import JOB_TYPES, OUTPUTS, Decoding
from vlmq.jobtypes.caption import CaptionParams
from vlmq.jobtypes.chat import ChatParams
from vlmq.jobtypes.detect import DetectOutput, DetectParams
from vlmq.jobtypes.vqa import VqaParams
from vlmq.registry import ModelSpec, RegistryError, load_registry
from vlmq.settings import Settings
from vlmq.tasks.adapters import _hf, check_registry, load_adapter_class
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, SetupError, WorkItem
from vlmq.tasks.adapters.paligemma import parse_loc_boxes

QUESTIONS = ["what is this?", "what color is the cat sitting on the couch?", "how many cups?"]
CHATS = [
    [
        {"role": "system", "content": "You are a brief assistant."},
        {"role": "user", "content": "What is in the picture?"},
    ],
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "a cat on a couch"},
        {"role": "user", "content": "what color is the cat?"},
    ],
    [{"role": "user", "content": "describe the picture"}],
]

# adapter, demo model, tasks, the params of the three items (one per photo)
GENERATIVE_CASES = {
    "blip-base caption": ("blip_caption", "blip-base", ["caption"], [CaptionParams(max_new_tokens=12)] * 3),
    "blip-large caption, prompt": (
        "blip_caption",
        "blip-large",
        ["caption"],
        [CaptionParams(prompt="a picture of", max_new_tokens=12)] * 3,
    ),
    "blip-base caption, beams": (
        "blip_caption",
        "blip-base",
        ["caption"],
        [CaptionParams(max_new_tokens=8, num_beams=3, early_stopping=True)] * 3,
    ),
    "blip-vqa": ("blip_vqa", "blip-vqa", ["vqa"], [VqaParams(question=q) for q in QUESTIONS]),
    "paligemma detect": (
        "paligemma",
        "paligemma",
        ["detect"],
        [
            DetectParams(prompt=p, max_new_tokens=24)
            for p in ("detect face ; person", "detect cat", "detect cup ; spoon ; table")
        ],
    ),
    "paligemma caption": ("paligemma", "paligemma", ["caption"], [CaptionParams(max_new_tokens=12)] * 3),
    "paligemma vqa": ("paligemma", "paligemma", ["vqa"], [VqaParams(question=q) for q in QUESTIONS]),
    "llava chat": (
        "image_text_to_text",
        "llava-chat",
        ["chat"],
        [ChatParams(messages=m, temperature=0, max_new_tokens=12) for m in CHATS],
    ),
    "llava caption": (
        "image_text_to_text",
        "llava-chat",
        ["caption"],
        [CaptionParams(max_new_tokens=12)] * 3,
    ),
    "llava checkpoint caption": (
        "image_text_to_text",
        "llava-ft/checkpoint-100",
        ["caption"],
        [CaptionParams(max_new_tokens=12)] * 3,
    ),
}


def items_for(photos, params_list) -> list[WorkItem]:
    return [
        WorkItem(f"job-{i}", photo, params)
        for i, (photo, params) in enumerate(zip(photos, params_list, strict=False))
    ]


def validated(outputs: list, params_list) -> list[dict]:
    assert len(outputs) == len(params_list)
    for output, params in zip(outputs, params_list, strict=False):
        assert isinstance(output, dict), output
        assert OUTPUTS[params.type].model_validate(output).model_dump(exclude_unset=True) == output
    return outputs


@pytest.mark.parametrize("case", list(GENERATIVE_CASES))
def test_batch_of_three_equals_one_by_one(case, make_adapter, photos):
    adapter_name, model, tasks, params_list = GENERATIVE_CASES[case]
    adapter = make_adapter(adapter_name, model, tasks)
    items = items_for(photos, params_list)
    assert len({adapter.batch_key(item) for item in items}) == 1  # the worker would batch them

    batched = validated(adapter.run(items, GenerationHooks()), params_list)
    alone = [adapter.run([item], GenerationHooks())[0] for item in items]
    assert batched == alone
    texts = [out.get("text") or out.get("answer") or "" for out in batched]
    assert any(texts), "greedy decoding produced nothing at all"


@pytest.mark.parametrize("case", list(GENERATIVE_CASES))
def test_generative_outputs_count_their_tokens(case, make_adapter, photos):
    adapter_name, model, tasks, params_list = GENERATIVE_CASES[case]
    outputs = make_adapter(adapter_name, model, tasks).run(items_for(photos, params_list), GenerationHooks())
    for output, params in zip(outputs, params_list, strict=True):
        if "usage" not in OUTPUTS[params.type].model_fields:
            continue
        used = output["usage"]
        assert used["prompt_tokens"] > 0 and 1 <= used["completion_tokens"] <= params.max_new_tokens, (case, used)


def test_endings_count_up_to_the_first_end_token_or_the_stop_string():
    eos, pad = 2, 0
    generated = torch.tensor([[5, 6, eos, pad, pad], [5, 6, 7, 8, 9], [eos, pad, pad, pad, pad], [5, 6, pad, pad, pad]])
    params = ChatParams(messages=CHATS[2], max_new_tokens=5, stop=["X"])
    texts = ["ab", "abcde", "", "abXc"]
    assert _hf.texts_and_endings(params, texts, [10, 11, 12, 13], generated, [eos], pad) == [
        ("ab", {"usage": {"prompt_tokens": 10, "completion_tokens": 3}, "finish_reason": "stop"}),
        ("abcde", {"usage": {"prompt_tokens": 11, "completion_tokens": 5}, "finish_reason": "length"}),
        ("", {"usage": {"prompt_tokens": 12, "completion_tokens": 1}, "finish_reason": "stop"}),
        # the stop string ended on its second token: padding follows, and the text ends before "X"
        ("ab", {"usage": {"prompt_tokens": 13, "completion_tokens": 2}, "finish_reason": "stop"}),
    ]
    # a stop string completed on the very last allowed token is a stop, not the length
    assert _hf.texts_and_endings(params, ["abcdX"], [1], generated[1:2], [eos], pad)[0][1]["finish_reason"] == "stop"
    assert _hf.texts_and_endings(params, ["abcde"], [1], generated[1:2], None)[0][1] == {
        "usage": {"prompt_tokens": 1, "completion_tokens": 5}, "finish_reason": "length"}


STOP_CASES = {
    "llava chat": ("image_text_to_text", "llava-chat", ["chat"],
                   lambda stop: ChatParams(messages=CHATS[2], temperature=0, max_new_tokens=24, stop=stop)),
    "llava caption": ("image_text_to_text", "llava-chat", ["caption"],
                      lambda stop: CaptionParams(max_new_tokens=24, stop=stop)),
    "blip caption": ("blip_caption", "blip-base", ["caption"], lambda stop: CaptionParams(max_new_tokens=24, stop=stop)),
    "blip caption, prompt": ("blip_caption", "blip-large", ["caption"],
                             lambda stop: CaptionParams(prompt="a picture of", max_new_tokens=24, stop=stop)),
    "paligemma caption": ("paligemma", "paligemma", ["caption"], lambda stop: CaptionParams(max_new_tokens=24, stop=stop)),
}


@pytest.mark.parametrize("case", list(STOP_CASES))
def test_a_stop_string_ends_the_text_before_it_and_the_stream_agrees(case, make_adapter, photos):
    adapter_name, model, tasks, params_of = STOP_CASES[case]
    adapter = make_adapter(adapter_name, model, tasks)
    free = adapter.run(items_for(photos[:1], [params_of(None)]), GenerationHooks())[0]
    text, prompt = free["text"], getattr(params_of(None), "prompt", None) or ""
    start = len(prompt) if prompt and text.startswith(prompt) else 0  # a stop string ends the generated part
    assert len(text) - start > 8, text
    middle = start + (len(text) - start) // 2
    stop = next(text[i : i + 2] for i in range(middle, len(text) - 1) if not any(c.isspace() for c in text[i : i + 2]))
    expected = text[: text.find(stop, start)].strip()
    streamed: list[str] = []
    hooks = GenerationHooks(on_text=lambda row, piece: streamed.append(piece), stream_interval_s=0)
    cut = validated(adapter.run(items_for(photos[:1], [params_of([stop, "\u2603never"])]), hooks),
                    [params_of([stop])])[0]
    assert cut["text"] == expected and stop not in cut["text"]
    assert cut["finish_reason"] == "stop" and free["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] < free["usage"]["completion_tokens"]
    assert cut["usage"]["prompt_tokens"] == free["usage"]["prompt_tokens"]
    assert stop not in "".join(streamed) and "".join(streamed).strip() == expected  # never a piece of the stop


def test_the_stream_holds_back_what_may_start_a_stop_string():
    from vlmq.tasks.generation import BatchTextStreamer

    class Chars:  # a tokenizer whose token i is chr(i)
        def decode(self, ids, skip_special_tokens=True):
            return "".join(map(chr, ids))

    pieces: list[str] = []
    streamer = BatchTextStreamer(Chars(), 1, lambda row, text: pieces.append(text), interval_s=0, stop=["END"])
    streamer.put(torch.tensor([0]))  # the prompt
    for char in "abEcEN":
        streamer.put(torch.tensor([ord(char)]))
    assert "".join(pieces) == "abEc"  # "EN" may begin "END": held
    for char in "Dxyz":
        streamer.put(torch.tensor([ord(char)]))
    streamer.end()
    assert "".join(pieces) == "abEc"


def test_caption_depends_on_the_image(make_adapter, photos):
    adapter = make_adapter("blip_caption", "blip-base", ["caption"])
    outputs = adapter.run(items_for(photos, [CaptionParams(max_new_tokens=12)] * 3), GenerationHooks())
    assert len({out["text"] for out in outputs}) > 1


def test_blip_prompt_starts_the_caption(make_adapter, photos):
    adapter = make_adapter("blip_caption", "blip-large", ["caption"])
    outputs = adapter.run(
        items_for(photos, [CaptionParams(prompt="A picture of", max_new_tokens=6)] * 3), GenerationHooks()
    )
    for out in outputs:
        assert out["text"].startswith("a picture of ")  # BLIP's tokenizer lowercases
        assert len(out["text"].split()) > 3


def test_blip_caption_batches_per_prompt(make_adapter, photos):
    adapter = make_adapter("blip_caption", "blip-base", ["caption"])
    params = [
        CaptionParams(max_new_tokens=8),
        CaptionParams(prompt="a dog", max_new_tokens=8),
        CaptionParams(max_new_tokens=8),
    ]
    items = items_for(photos, params)
    assert adapter.batch_key(items[0]) != adapter.batch_key(items[1])
    mixed = adapter.run(items, GenerationHooks())  # defensive: still right when called with mixed prompts
    assert mixed == [adapter.run([item], GenerationHooks())[0] for item in items]
    assert mixed[1]["text"].startswith("a dog")


def test_sampled_caption_is_reproducible_under_a_seed(make_adapter, photos):
    adapter = make_adapter("image_text_to_text", "llava-chat", ["caption"])
    params = [CaptionParams(max_new_tokens=10, decoding=Decoding(strategy="nucleus", top_p=0.9))] * 2
    items = items_for(photos, params)
    torch.manual_seed(7)  # the worker seeds; the adapter never does
    first = validated(adapter.run(items, GenerationHooks()), params)
    torch.manual_seed(7)
    assert adapter.run(items, GenerationHooks()) == first


def test_vilt_top_k_scores(make_adapter, photos):
    adapter = make_adapter("vilt_vqa", "vilt-vqa", ["vqa"])
    params = [VqaParams(question=q, top_k=7) for q in QUESTIONS]
    items = items_for(photos, params)
    outputs = validated(adapter.run(items, GenerationHooks()), params)
    labels = set(adapter.model.config.id2label.values())
    for out in outputs:
        scores = [s["score"] for s in out["scores"]]
        assert len(scores) == 7
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert out["answer"] == out["scores"][0]["answer"]
        assert {s["answer"] for s in out["scores"]} <= labels
    # mixed image sizes padded into one batch (pixel_mask) score as each image alone
    alone = [adapter.run([item], GenerationHooks())[0] for item in items]
    for batched, single in zip(outputs, alone, strict=False):
        assert [s["answer"] for s in batched["scores"]] == [s["answer"] for s in single["scores"]]
        assert [s["score"] for s in batched["scores"]] == pytest.approx(
            [s["score"] for s in single["scores"]], abs=1e-4
        )


def test_vilt_top_k_per_item(make_adapter, photos):
    adapter = make_adapter("vilt_vqa", "vilt-vqa", ["vqa"])
    params = [VqaParams(question="what is this?", top_k=k) for k in (1, 3)]
    outputs = adapter.run(items_for(photos, params), GenerationHooks())
    assert [len(out["scores"]) for out in outputs] == [1, 3]


def overlap(box: dict, x0: float, y0: float, x1: float, y1: float) -> float:
    """Intersection over the box's own area."""
    w = max(0.0, min(box["x1"], x1) - max(box["x0"], x0))
    h = max(0.0, min(box["y1"], y1) - max(box["y0"], y0))
    return w * h / ((box["x1"] - box["x0"]) * (box["y1"] - box["y0"]))


def test_haar_finds_the_astronauts_face_and_eyes(make_adapter, photos):
    adapter = make_adapter("haar_cascade", "opencv", ["detect"])
    params = [DetectParams(prompt="detect face ; eyes")]
    (out,) = validated(adapter.run(items_for(photos, params), GenerationHooks()), params)
    assert (out["width"], out["height"]) == (512, 512)
    faces = [b for b in out["boxes"] if b["label"] == "face"]
    eyes = [b for b in out["boxes"] if b["label"] == "eyes"]
    assert len(faces) >= 1
    face = max(faces, key=lambda b: overlap(b, 170, 40, 290, 190))
    assert overlap(face, 170, 40, 290, 190) > 0.8
    assert 60 <= face["x1"] - face["x0"] <= 160  # a face-sized box, not the whole picture
    assert all(b["score"] is None for b in out["boxes"])
    assert len(eyes) >= 1
    assert all(overlap(eye, face["x0"], face["y0"], face["x1"], face["y1"]) > 0.9 for eye in eyes)


def test_haar_boxes_are_in_original_pixels(make_adapter, photos):
    """A large image is searched downscaled: its boxes are still in its own pixels."""
    adapter = make_adapter("haar_cascade", "opencv", ["detect"])
    big = photos[0].resize((2048, 2048))
    (out,) = adapter.run([WorkItem("j", big, DetectParams(prompt="detect face"))], GenerationHooks())
    assert (out["width"], out["height"]) == (2048, 2048)
    assert any(overlap(b, 170 * 4, 40 * 4, 290 * 4, 190 * 4) > 0.8 for b in out["boxes"])


def test_haar_unsupported_label_fails_that_item_only(make_adapter, photos):
    adapter = make_adapter("haar_cascade", "opencv", ["detect"])
    params = [
        DetectParams(prompt="detect face"),
        DetectParams(prompt="detect dog ; face"),
        DetectParams(prompt="detect eye"),
    ]
    outputs = adapter.run(items_for(photos, params), GenerationHooks())
    assert isinstance(outputs[1], ItemError)
    assert "'dog'" in str(outputs[1]) and "face" in str(outputs[1]) and "eye" in str(outputs[1])
    assert isinstance(outputs[0], dict) and isinstance(outputs[2], dict)
    assert (outputs[0]["width"], outputs[2]["width"]) == (photos[0].width, photos[2].width)  # in item order
    DetectOutput.model_validate(outputs[0])
    assert len(outputs[0]["boxes"]) >= 1


def test_haar_revision_fingerprints_the_cascades(make_adapter, tmp_path):
    import shutil

    import cv2

    adapter = make_adapter("haar_cascade", "opencv", ["detect"])
    first = adapter.revision()
    assert first == adapter.revision() and len(first) == 16
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml"):
        shutil.copy(cv2.data.haarcascades + name, tmp_path / name)
    copy = make_adapter("haar_cascade", str(tmp_path), ["detect"], description="copy")
    assert copy.revision() == first
    (tmp_path / "haarcascade_eye.xml").write_text("<opencv_storage></opencv_storage>")
    assert copy.revision() != first


def test_haar_missing_cascade_folder_is_a_setup_error(make_adapter, tmp_path):
    with pytest.raises(SetupError, match="no cascade"):
        make_adapter("haar_cascade", str(tmp_path), ["detect"], description="empty")


def test_paligemma_detect_boxes_come_from_its_text(make_adapter, photos):
    adapter = make_adapter("paligemma", "paligemma", ["detect"])
    params = [DetectParams(prompt="detect cat ; dog", max_new_tokens=48)] * 3
    outputs = adapter.run(items_for(photos, params), GenerationHooks())
    seen_loc = False
    for out, photo in zip(outputs, photos, strict=False):
        assert (out["width"], out["height"]) == photo.size
        assert out["boxes"] == [b.model_dump() for b in parse_loc_boxes(out["text"], *photo.size)]
        seen_loc = seen_loc or "<loc" in out["text"]
        for box in out["boxes"]:
            assert 0 <= box["x0"] < box["x1"] <= photo.width and 0 <= box["y0"] < box["y1"] <= photo.height
    assert seen_loc, "location tokens must survive decoding"


def test_the_registry_refuses_an_entry_its_adapter_cannot_serve(tmp_path) -> None:
    """Checked when a worker loads the registry: the entry and its adapter are named, before any job."""
    bad = {"bad-vqa": {"adapter": "blip_caption", "source": "demo:blip-base", "tasks": ["vqa", "caption"]},
           "no-such": {"adapter": "nope", "source": "x", "tasks": ["caption"]}}
    with pytest.raises(RegistryError) as refused:
        check_registry(load_registry(Settings(data_dir=tmp_path, models=bad)))
    message = str(refused.value)
    assert "model 'bad-vqa': adapter 'blip_caption' cannot run vqa (it runs caption, explain)" in message
    assert "model 'no-such': unknown adapter 'nope'" in message
    check_registry(load_registry(Settings(data_dir=tmp_path)))  # the shipped registry holds


def test_a_worker_refuses_to_start_on_such_a_registry(base_env, log_dir) -> None:
    models = {**json.loads(base_env["VLMQ_MODELS"]),
              "bad-vqa": {"adapter": "blip_caption", "source": "demo:blip-base", "tasks": ["vqa"]}}
    env = {**base_env, "VLMQ_MODELS": json.dumps(models)}
    done = subprocess.run([sys.executable, "-m", "vlmq.cli", "worker", "--model", "blip-base"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == EXIT_SETUP_FAILED, done.stdout[-2000:] + done.stderr[-2000:]
    assert "model 'bad-vqa': adapter 'blip_caption' cannot run vqa" in done.stdout + done.stderr


def test_each_adapter_dispatches_every_type_it_declares() -> None:
    """The multi-type adapters' dispatch tables are their `tasks`; every type is a job type."""
    from vlmq.tasks.adapters import image_text_to_text, paligemma

    assert load_adapter_class("paligemma").tasks == frozenset(paligemma.PROMPTS) == {"detect", "segment", "caption", "vqa", "ocr"}
    assert load_adapter_class("image_text_to_text").tasks == frozenset(image_text_to_text.TURNS)
    for name in ("blip_caption", "blip_vqa", "vilt_vqa", "haar_cascade", "paligemma", "image_text_to_text"):
        assert load_adapter_class(name).tasks <= set(JOB_TYPES) - {"compare"}, name


STREAM_CASES = {
    "blip caption": ("blip_caption", "blip-base", ["caption"], [CaptionParams(max_new_tokens=10)] * 2),
    "blip caption, prompt": (
        "blip_caption",
        "blip-large",
        ["caption"],
        [CaptionParams(prompt="a picture of", max_new_tokens=10)] * 2,
    ),
    "blip vqa": ("blip_vqa", "blip-vqa", ["vqa"], [VqaParams(question=q) for q in QUESTIONS[:2]]),
    "paligemma caption": ("paligemma", "paligemma", ["caption"], [CaptionParams(max_new_tokens=10)] * 2),
    "llava chat": (
        "image_text_to_text",
        "llava-chat",
        ["chat"],
        [ChatParams(messages=m, temperature=0, max_new_tokens=10) for m in CHATS[:2]],
    ),
}


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_streamed_pieces_make_the_final_text(case, make_adapter, photos):
    adapter_name, model, tasks, params_list = STREAM_CASES[case]
    adapter = make_adapter(adapter_name, model, tasks)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    hooks = GenerationHooks(on_text=lambda row, text: pieces[row].append(text), stream_interval_s=0)
    outputs = adapter.run(items_for(photos, params_list), hooks)
    for row, out in enumerate(outputs):
        final = out.get("text", out.get("answer"))
        assert final and "".join(pieces[row]).strip() == final
        assert len(pieces[row]) > 1  # token by token, not in one piece at the end


CANCEL_CASES = {
    "blip caption": ("blip_caption", "blip-base", ["caption"], [CaptionParams(max_new_tokens=20)] * 2),
    "paligemma caption": ("paligemma", "paligemma", ["caption"], [CaptionParams(max_new_tokens=20)] * 2),
    "llava chat": (
        "image_text_to_text",
        "llava-chat",
        ["chat"],
        [ChatParams(messages=m, temperature=0, max_new_tokens=20) for m in CHATS[1:3]],
    ),
}


@pytest.mark.parametrize("case", list(CANCEL_CASES))
def test_cancelled_row_stops_early_while_others_go_on(case, make_adapter, photos):
    adapter_name, model, tasks, params_list = CANCEL_CASES[case]
    adapter = make_adapter(adapter_name, model, tasks)
    items = items_for(photos, params_list)
    full = adapter.run(items, GenerationHooks())
    checks: list[int] = []

    def is_cancelled(row: int) -> bool:
        checks.append(row)
        return row == 0

    cancelled = adapter.run(items, GenerationHooks(is_cancelled=is_cancelled))
    assert {0, 1} <= set(checks)
    assert len(cancelled[0]["text"]) < len(full[0]["text"])
    tokenizer = adapter.tokenizer
    assert len(tokenizer(cancelled[0]["text"], add_special_tokens=False)["input_ids"]) <= 2
    assert cancelled[1] == full[1]


def test_quantization_on_cpu_is_a_setup_error(make_adapter):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: 8-bit quantization may load here")
    with pytest.raises(SetupError, match="quantization"):
        make_adapter("blip_caption", "blip-base", ["caption"], quantization="8bit")


def test_missing_model_folder_is_a_setup_error(make_adapter):
    with pytest.raises(SetupError, match="test-model"):
        make_adapter("blip_caption", "no-such-model", ["caption"], description="missing")


@pytest.mark.parametrize(
    "name", ["blip_caption", "blip_vqa", "vilt_vqa", "paligemma", "haar_cascade", "image_text_to_text"]
)
def test_load_adapter_class(name):
    cls = load_adapter_class(name)
    assert issubclass(cls, ModelAdapter) and cls.tasks


@pytest.mark.parametrize("name", ["no_such_adapter", "base", "_hf", "../etc", "Blip_Caption", ""])
def test_unknown_adapter_is_a_setup_error(name):
    with pytest.raises(SetupError, match="adapter"):
        load_adapter_class(name)


def test_paligemma_vqa_prompt(make_adapter):
    adapter = make_adapter("paligemma", "paligemma", ["vqa"])
    assert adapter.prompt_for(VqaParams(question="how many cats?")) == "answer en how many cats?"
    assert adapter.prompt_for(CaptionParams()) == "caption en"
    assert adapter.prompt_for(CaptionParams(prompt="caption es")) == "caption es"
    assert adapter.prompt_for(DetectParams(prompt="detect  cat;dog")) == "detect cat ; dog"


def test_chat_template_gets_system_history_and_image(make_adapter):
    adapter = make_adapter("image_text_to_text", "llava-chat", ["chat"])
    prompt = adapter.prompt(ChatParams(messages=CHATS[0]))
    assert prompt.index("system") < prompt.index("<image>") < prompt.index("What is in the picture?")
    assert prompt.endswith("<|im_start|>assistant\n")
    prompt = adapter.prompt(ChatParams(messages=CHATS[1]))
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("hello")
    assert prompt.index("a cat on a couch") < prompt.index("what color is the cat?")


def test_template_without_system_role_gets_it_folded_into_the_first_user_turn(make_adapter, photos):
    adapter = make_adapter("image_text_to_text", "llava-chat", ["chat"], description="no system role")
    adapter.processor.chat_template = (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )
    prompt = adapter.prompt(ChatParams(messages=CHATS[0]))
    assert "system" not in prompt
    assert prompt.index("<image>") < prompt.index("You are a brief assistant.") < prompt.index("What is in")
    params = [ChatParams(messages=CHATS[0], temperature=0, max_new_tokens=4)]
    validated(adapter.run(items_for(photos, params), GenerationHooks()), params)


def test_streamed_pieces_are_coalesced_in_time(make_adapter, photos, monkeypatch):
    """By default a row's text goes out at most every 50 ms, not once per token (fewer Redis writes).
    The streamer's clock is a fake one that moves 10 ms per generated token: no real timing."""
    from types import SimpleNamespace

    from vlmq.tasks import generation

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(generation, "time", SimpleNamespace(monotonic=lambda: clock.now))
    put = generation.BatchTextStreamer.put

    def one_token_later(self, value):
        clock.now += 0.01
        put(self, value)

    monkeypatch.setattr(generation.BatchTextStreamer, "put", one_token_later)
    adapter = make_adapter("blip_caption", "blip-large", ["caption"])
    pieces: list[tuple[int, float]] = []
    hooks = GenerationHooks(on_text=lambda row, text: pieces.append((row, clock.now)), stream_interval_s=0.05)
    adapter.run(items_for(photos, [CaptionParams(max_new_tokens=60)]), hooks)
    ended = clock.now
    ticks = sorted({at for _row, at in pieces if at < ended})  # what went out before the end
    assert len(ticks) >= 3, pieces  # the text streamed: not only at the end
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(ticks)), ticks
    for row in range(len(photos)):  # at most one piece per row per tick, far fewer than its ~60 tokens
        mine = [at for r, at in pieces if r == row]
        assert len(mine) == len(set(mine)) and len(mine) <= 60 // 5 + 1, mine


def test_paligemma_segments_a_batch_as_it_would_one_by_one(make_adapter, photos):
    from vlmq.jobtypes.segment import SegmentParams

    adapter = make_adapter("paligemma", "paligemma", ["segment"], mask_decoder="vae-oid.npz")
    params_list = [SegmentParams(prompt=p, max_new_tokens=48) for p in ("segment cat", "segment face ; hat",
                                                                          "segment cup")]
    items = items_for(photos, params_list)
    batched = validated(adapter.run(items, GenerationHooks()), params_list)
    assert batched == [adapter.run([item], GenerationHooks())[0] for item in items]
    for output, photo in zip(batched, photos, strict=True):
        assert (output["width"], output["height"]) == photo.size and output["text"]


def test_paligemma_without_its_mask_decoder_file_fails_setup(make_adapter, tmp_path):
    with pytest.raises(SetupError, match="vae-oid"):
        make_adapter("paligemma", "paligemma", ["segment"], mask_decoder=str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="mask_decoder"):
        ModelSpec(name="pg", adapter="paligemma", source="demo:paligemma", tasks=["segment"])
