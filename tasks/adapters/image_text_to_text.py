"""Any chat vision-language model through `AutoModelForImageTextToText` and its chat template.

llava-hf/llava-interleave-qwen-0.5b-hf, llava-hf/llava-1.5-7b-hf, Qwen2-VL, ... or the demo Llava
models (and their training checkpoints). The conversation goes through the processor's own chat
template (`apply_chat_template(..., add_generation_prompt=True)`), with the image attached to the
first user turn as an ``{"type": "image"}`` content part. A template that refuses a system turn
gets the system text folded into the first user turn instead.

`chat` runs the job's messages; `caption` is a single user turn, "Describe this image." (or the
job's prompt); `explain` is the job's question as a single user turn (or the caption's), and then
one more pass over the answer, with eager attention, reads where each generated token looked: the
mean over heads of the last layers' attention from the step that chose it to the image's tokens
(`_heat`; models whose image tokens make a square grid, as Llava's do). Rows of a batch are left padded, and only the new tokens are decoded. `TURNS` maps
each job type it runs to the conversation of a job: its keys are the adapter's `tasks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from vlmq.jobtypes import Params
from vlmq.tasks.adapters import _hf
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, SetupError, WorkItem

DEFAULT_CAPTION_PROMPT = "Describe this image."
OCR_PROMPT = "Transcribe all the text in this image, exactly as written. Answer with the text only."

#: The conversation of a job, as (role, text) pairs, per job type this adapter runs.
TURNS: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "chat": lambda params: [(m.role, m.content) for m in params.messages],
    "caption": lambda params: [("user", (params.prompt or "").strip() or DEFAULT_CAPTION_PROMPT)],
    "ocr": lambda params: [("user", OCR_PROMPT)],
    "explain": lambda params: [("user", params.question or DEFAULT_CAPTION_PROMPT)],
}
HEAT_METHOD = (f"language model self-attention from each generated token to the image tokens: mean over heads "
               f"and the last {_hf.HEAT_LAYERS} layers, at the step that chose it")


def build_conversation(messages: list[tuple[str, str]], fold_system: bool = False) -> list[dict[str, Any]]:
    """Chat-template messages from (role, text) pairs; the image goes first in the first user turn."""
    pairs = list(messages)
    if fold_system and pairs and pairs[0][0] == "system":
        system = pairs.pop(0)[1]
        for i, (role, text) in enumerate(pairs):
            if role == "user":
                pairs[i] = (role, f"{system}\n\n{text}")
                break
    conversation: list[dict[str, Any]] = []
    image_placed = False
    for role, text in pairs:
        content: list[dict[str, Any]] = []
        if role == "user" and not image_placed:
            content.append({"type": "image"})
            image_placed = True
        content.append({"type": "text", "text": text})
        conversation.append({"role": role, "content": content})
    return conversation


class ImageTextToTextAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset(TURNS)

    def setup(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = _hf.load_pretrained(self, AutoModelForImageTextToText)
        self.processor = _hf.load_processor(self, AutoProcessor)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if (
            getattr(self.processor, "chat_template", None) is None
            and getattr(self.tokenizer, "chat_template", None) is None
        ):
            raise SetupError(f"model {self.spec.name}: {self.source!r} has no chat template")

    def prompt(self, params: Params) -> str:
        """The chat-templated prompt text of one job (image placeholder included)."""
        pairs = TURNS[params.type](params)
        from jinja2 import TemplateError

        try:
            return self._template(build_conversation(pairs))
        except (TemplateError, ValueError) as exc:  # raise_exception(...) for a role it does not know
            if pairs[0][0] != "system":
                raise ItemError(f"the model's chat template refused the conversation: {exc}") from exc
            return self._template(build_conversation(pairs, fold_system=True))

    def _template(self, conversation: list[dict[str, Any]]) -> str:
        return _hf.local(self.processor).apply_chat_template(conversation, add_generation_prompt=True,
                                                             tokenize=False)

    def input_size(self) -> tuple[int, int] | None:
        return _hf.input_size(self.processor)

    def prepare(self, items: list[WorkItem]) -> _hf.Prepared:
        results, prompts, rows = _hf.prompts_for(items, self.prompt)
        batch = _hf.Prepared(items, results)
        if rows:
            inputs = _hf.local(self.processor)(
                images=[_hf.rgb(items[r].image) for r in rows], text=prompts, padding=True, return_tensors="pt"
            )
            batch.parts.append((rows, _hf.staged(inputs, self.model)))
        return batch

    def predict(self, batch: _hf.Prepared, hooks: GenerationHooks) -> list[dict | Exception]:
        results = list(batch.results)
        if not batch.parts:
            return results
        (rows, inputs), = batch.parts
        inputs = _hf.to_model(inputs, self.model)
        prompt_length = inputs["input_ids"].shape[1]
        generation = _hf.generation(batch.items[rows[0]].params, _hf.subset_hooks(hooks, rows), self.tokenizer,
                                    len(rows))
        with torch.inference_mode():
            out = self.model.generate(**inputs, **generation, pad_token_id=self.tokenizer.pad_token_id)
        generated = _hf.new_tokens(out, prompt_length)
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        params = batch.items[rows[0]].params
        answers = _hf.texts_and_endings(params, texts, inputs["attention_mask"].sum(dim=1).tolist(),
                                        generated, _hf.eos_ids(self.model), self.tokenizer.pad_token_id)
        if params.type == "explain":
            try:
                heat, grid = self._heat(inputs, out, prompt_length)
            except ItemError as exc:
                return [exc if result is None else result for result in results]
            for i, (_text, ending) in enumerate(answers):
                _hf.add_heats(ending, self.tokenizer, generated[i], heat[i], grid, HEAT_METHOD)
        for row, (text, ending) in zip(rows, answers, strict=True):
            results[row] = {"text": text.strip(), **ending}  # every type it runs answers text
        return results


    def _heat(self, inputs: Any, out: torch.Tensor, prompt_length: int) -> tuple[torch.Tensor, list[int]]:
        """(rows, generated, image tokens) attention, and the image tokens' [rows, columns]. Row i of a
        row's heat is the attention of the query that chose generated token i (at prompt_length - 1 + i)."""
        model = self.model
        image_id = getattr(model.config, "image_token_id", None)
        if image_id is None:
            image_id = model.config.image_token_index
        image = out == image_id
        count = int(image[0].sum())
        side = int(count**0.5)
        if count == 0 or side * side != count or not bool((image.sum(dim=1) == count).all()):
            raise ItemError(f"model {self.spec.name}: explain needs image tokens that make a square grid "
                            f"(this image has {count})")
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(out[:, prompt_length:])], dim=1)
        previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
        model.set_attn_implementation("eager")  # sdpa computes no attention weights to return
        try:
            with torch.inference_mode():
                attentions = model(input_ids=out, pixel_values=inputs["pixel_values"], attention_mask=mask,
                                   output_attentions=True, return_dict=True).attentions
        finally:
            model.set_attn_implementation(previous)
        queries = _hf.mean_attention(attentions)[:, prompt_length - 1 : out.shape[1] - 1]  # (rows, generated, L)
        columns = image.nonzero()[:, 1].reshape(out.shape[0], count)  # each row's image positions
        heat = torch.gather(queries, 2, columns.unsqueeze(1).expand(-1, queries.shape[1], -1))
        return _hf.normalised(heat), [side, side]


Adapter = ImageTextToTextAdapter
