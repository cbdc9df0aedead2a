"""`explain` on the BLIP adapters (demo models): the same text as the base type, one heat grid per
text token that sums to 1 and depends on the image, batches as one by one, and its artifacts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vlmq.jobtypes.caption import CaptionParams
from vlmq.jobtypes.chat import ChatParams
from vlmq.jobtypes.explain import ExplainOutput, ExplainParams, decode_heat, render
from vlmq.jobtypes.vqa import VqaParams
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, WorkItem

CASES = {"caption": ("blip_caption", "blip-base", None), "vqa": ("blip_vqa", "blip-vqa", "what is on the table?"),
         "llava": ("image_text_to_text", "llava-chat", "describe the picture")}


def _base(case: str, question: str | None, tokens: int):
    """The base type's params that answer as the explain job does."""
    if case == "caption":
        return CaptionParams(max_new_tokens=tokens)
    if case == "vqa":
        return VqaParams(question=question, max_new_tokens=tokens)
    return ChatParams(messages=[{"role": "user", "content": question}], temperature=0, max_new_tokens=tokens)


def _run(adapter, photos, params_list):
    return adapter.run([WorkItem(f"j{i}", photo, p) for i, (photo, p) in enumerate(zip(photos, params_list,
                                                                                       strict=False))],
                       GenerationHooks())


@pytest.mark.parametrize("case", list(CASES))
def test_explain_answers_as_its_base_type_with_a_heat_grid_per_token(case, make_adapter, photos) -> None:
    adapter_name, model, question = CASES[case]
    adapter = make_adapter(adapter_name, model, ["explain"])
    explained = [ExplainOutput.model_validate(out) for out in
                 _run(adapter, photos, [ExplainParams(question=question, max_new_tokens=10)] * 3)]
    plain = _run(adapter, photos, [_base(case, question, 10)] * 3)
    grid = [4, 4]  # the demo models' 32 px input in 8 px patches
    for out, answer in zip(explained, plain, strict=True):
        assert out.text == (answer.get("text") or answer.get("answer"))
        assert out.usage.model_dump() == answer["usage"] and out.grid == grid and out.method
        assert 1 <= len(out.tokens) <= out.usage.completion_tokens
        for token in out.tokens:
            heat = decode_heat(token.heat, out.grid)
            assert heat.min() >= 0 and abs(float(heat.sum()) - 1) < 1e-2, token
    first = [decode_heat(t.heat, explained[0].grid) for t in explained[0].tokens]
    second = [decode_heat(t.heat, explained[1].grid) for t in explained[1].tokens]
    assert not np.allclose(first[0], second[0])  # the heat depends on the image


@pytest.mark.parametrize("case", list(CASES))
def test_explain_batched_equals_one_by_one(case, make_adapter, photos) -> None:
    adapter_name, model, question = CASES[case]
    adapter = make_adapter(adapter_name, model, ["explain"])
    params = [ExplainParams(question=question, max_new_tokens=6)] * 3
    batched = _run(adapter, photos, params)
    alone = [_run(adapter, [photo], params[:1])[0] for photo in photos]
    for one, other in zip(batched, alone, strict=True):
        assert one["text"] == other["text"]
        for a, b in zip(one["tokens"], other["tokens"], strict=True):
            assert a["text"] == b["text"]
            assert np.allclose(decode_heat(a["heat"], one["grid"]), decode_heat(b["heat"], other["grid"]), atol=2e-3)


def test_explain_asks_the_right_model(make_adapter, photos) -> None:
    captioner = make_adapter("blip_caption", "blip-base", ["explain"])
    (refused,) = _run(captioner, photos[:1], [ExplainParams(question="what is it?")])
    assert isinstance(refused, ItemError) and "question" in str(refused)
    answerer = make_adapter("blip_vqa", "blip-vqa", ["explain"])
    refused, answered = _run(answerer, photos[:2], [ExplainParams(), ExplainParams(question="what is it?")])
    assert isinstance(refused, ItemError) and isinstance(answered, dict) and answered["tokens"]


def test_the_overlays_are_at_the_images_size_one_per_token_on_request(make_adapter, photos) -> None:
    adapter = make_adapter("blip_caption", "blip-base", ["explain"])
    photo = photos[1]  # 451 x 300
    for token_images in (False, True):
        params = ExplainParams(max_new_tokens=6, token_images=token_images)
        (output,) = _run(adapter, [photo], [params])
        files = render(photo, output, params)
        expected = {"overlay.png"} | ({f"token/{i}.png" for i in range(len(output["tokens"]))} if token_images else set())
        assert set(files) == expected
        for data in files.values():
            assert Image.open(io.BytesIO(data)).size == photo.size
    hot = np.zeros((4, 4), dtype=np.float32)
    hot[0, 3] = 1.0  # all the heat in the top-right patch: the top-right corner changes most
    from vlmq.jobtypes.explain import overlay

    grey = Image.new("RGB", (80, 40), (128, 128, 128))
    drawn = np.asarray(Image.open(io.BytesIO(overlay(grey, hot))).convert("RGB")).astype(int)
    change = np.abs(drawn - 128).sum(axis=2)
    assert change[2, 77] > 3 * change[37, 2]


@pytest.mark.parametrize("case", list(CASES))
def test_explain_takes_the_base_types_decoding(case, make_adapter, photos) -> None:
    """Beams and sampled decoding as caption takes them; the heat is read from whatever was chosen."""
    from vlmq.jobtypes.base import Decoding

    adapter_name, model, question = CASES[case]
    adapter = make_adapter(adapter_name, model, ["explain"])
    beams = _run(adapter, photos[:1], [ExplainParams(question=question, max_new_tokens=6, num_beams=3)])[0]
    assert beams["tokens"] and all(abs(float(decode_heat(t["heat"], beams["grid"]).sum()) - 1) < 1e-2
                                   for t in beams["tokens"])
    sampled = ExplainParams(question=question, max_new_tokens=6, seed=7,
                            decoding=Decoding(strategy="temperature", temperature=1.5))
    assert sampled.sampled
    first = _run(adapter, photos[:1], [sampled])[0]
    if case == "caption":
        assert beams["text"] == _run(adapter, photos[:1], [CaptionParams(max_new_tokens=6, num_beams=3)])[0]["text"]
    assert first["tokens"]
