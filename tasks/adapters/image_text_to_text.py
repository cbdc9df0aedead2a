"""Any chat vision-language model through `AutoModelForImageTextToText` and its chat template.

llava-hf/llava-interleave-qwen-0.5b-hf, llava-hf/llava-1.5-7b-hf, Qwen2-VL, ... or the demo Llava
models (and their training checkpoints). The conversation goes through the processor's own chat
template (`apply_chat_template(..., add_generation_prompt=True)`), with the image attached to the
first user turn as an ``{"type": "image"}`` content part. A template that refuses a system turn
gets the system text folded into the first user turn instead.

`chat` runs the job's messages; `caption` is a single user turn, "Describe this image." (or the
job's prompt). Rows of a batch are left padded, and only the new tokens are decoded. `TURNS` maps
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
}


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
        answers = _hf.texts_and_endings(batch.items[rows[0]].params, texts, inputs["attention_mask"].sum(dim=1).tolist(),
                                        generated, _hf.eos_ids(self.model), self.tokenizer.pad_token_id)
        for row, (text, ending) in zip(rows, answers, strict=True):
            results[row] = {"text": text.strip(), **ending}  # every type it runs answers text
        return results


Adapter = ImageTextToTextAdapter
