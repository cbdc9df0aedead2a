"""BLIP image captioning (`BlipForConditionalGeneration`): unconditional or with a prefix prompt.

Salesforce/blip-image-captioning-base / -large, or the demo models. A `prompt` ("a photograph of")
is the caption's beginning: the model continues it, and the returned caption starts with it, as
BLIP's own examples read. BLIP's text decoder uses absolute positions, so prompts of different
lengths cannot share a padded batch: items are batched per prompt (the batch key includes it).

`explain` captions as `caption` does (no prompt), then reads, in one more pass of the text decoder
over the caption, its cross-attention to the image's patches: per token, the mean over heads of the
last layers' attention at the step that chose it (`_hf.patch_heat`).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any, ClassVar

import torch

from vlmq.tasks.adapters import _hf
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, WorkItem

HEAT_METHOD = (f"text decoder cross-attention to the image patches: mean over heads and the last {_hf.HEAT_LAYERS} "
               "layers, at the step that chose each token")


class BlipCaptionAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset({"caption", "explain"})

    def setup(self) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.model = _hf.load_pretrained(self, BlipForConditionalGeneration)
        self.processor = _hf.load_processor(self, BlipProcessor)
        self.tokenizer = self.processor.tokenizer

    def batch_key(self, item: WorkItem) -> Hashable:
        data = item.params.model_dump(mode="json")  # the prompt stays in: one prompt per batch
        return json.dumps(data, sort_keys=True)

    def input_size(self) -> tuple[int, int] | None:
        return _hf.input_size(self.processor)

    def prepare(self, items: list[WorkItem]) -> _hf.Prepared:
        batch = _hf.Prepared(items, [None] * len(items))
        if items[0].params.type == "explain" and items[0].params.question:  # one batch key: all or none
            batch.results = [ItemError(f"model {self.spec.name} captions: an explain job for it has no question "
                                       "(a VQA model answers one)")] * len(items)
            return batch
        prompts = [(getattr(item.params, "prompt", None) or "").strip() for item in items]
        processor = _hf.local(self.processor)
        for rows in _hf.group_rows(prompts):
            prompt = prompts[rows[0]]
            kwargs: dict[str, Any] = {"images": [_hf.rgb(items[r].image) for r in rows], "return_tensors": "pt"}
            if prompt:
                kwargs["text"] = [prompt] * len(rows)
            inputs = processor(**kwargs)
            inputs.pop("token_type_ids", None)
            batch.parts.append((rows, (prompt, _hf.staged(inputs, self.model))))
        return batch

    def predict(self, batch: _hf.Prepared, hooks: GenerationHooks) -> list[dict | Exception]:
        results = list(batch.results)
        for rows, (prompt, inputs) in batch.parts:
            texts = self._caption(batch.items[rows[0]].params, prompt, inputs, _hf.subset_hooks(hooks, rows))
            for row, (text, ending) in zip(rows, texts, strict=True):
                results[row] = {"text": text, **ending}
        return results

    def _caption(self, params: Any, prompt: str, inputs: Any, hooks: GenerationHooks
                 ) -> list[tuple[str, dict[str, Any]]]:
        """Per row, its caption and the rest of its output (the image's tokens, [DEC] and the prompt are
        its prompt); for `explain`, its tokens' heat over the patches too."""
        model = self.model
        inputs = _hf.to_model(inputs, model)
        rows = inputs["pixel_values"].shape[0]
        generation = _hf.generation(params, hooks, self.tokenizer, rows)
        if prompt and "streamer" in generation and hooks.on_text is not None:
            # The streamer skips the prompt ids; the caption starts with the prompt, so stream it first.
            for row in range(rows):
                hooks.on_text(row, self._prefix_text(prompt))
        explain = params.type == "explain"
        seen: list[torch.Tensor] = []  # explain: the image embeddings generate() computes, kept rather than redone
        hook = model.vision_model.register_forward_hook(lambda _m, _a, output: seen.append(output[0])) if explain else None
        try:
            with torch.inference_mode():
                out = model.generate(**inputs, **generation)
        finally:
            if hook is not None:
                hook.remove()
        # generate() returns the prompt ids too ([DEC] + prompt): prefix text + the continuation.
        prompt_length = inputs["input_ids"].shape[1] - 1 if prompt else 1
        continuations = out[:, prompt_length:]
        prefix = self._prefix_text(prompt) if prompt else ""
        texts = self.tokenizer.batch_decode(continuations, skip_special_tokens=True)
        text_config = model.config.text_config
        answers = _hf.texts_and_endings(params, texts, [prompt_length + _hf.image_tokens(model)] * rows,
                                        continuations, text_config.sep_token_id, text_config.pad_token_id)
        if explain:
            with torch.inference_mode():
                attention = model.text_decoder(input_ids=out, encoder_hidden_states=seen[-1], output_attentions=True,
                                               return_dict=True).cross_attentions
            heat = _hf.patch_heat(attention)[:, prompt_length - 1 :]  # query i chose out[i + 1]
            for row, (_text, ending) in enumerate(answers):
                _hf.add_heats(ending, self.tokenizer, continuations[row], heat[row], _hf.patch_grid(model), HEAT_METHOD)
        return [((prefix + t).strip(), ending) for t, ending in answers]

    def _prefix_text(self, prompt: str) -> str:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip() + " "


Adapter = BlipCaptionAdapter
