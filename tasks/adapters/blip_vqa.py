"""BLIP visual question answering (`BlipForQuestionAnswering`): a generated short answer, no scores.

Salesforce/blip-vqa-base, or the demo model. `BlipForQuestionAnswering.generate` lets the answer
decoder attend to the question's padding: it passes an all-ones question mask, and (transformers 5)
BLIP's cross-attention drops whatever mask it is given anyway. A batch of questions of different
lengths would then answer differently than each question alone. So this adapter runs the three
steps itself: the vision encoder and the question encoder once for the whole (right padded,
masked) batch, then the answer decoder once per question length, on unpadded question states.

`explain` answers as `vqa` does, then follows the attention back to the image through the question:
the answer decoder attends to the question's tokens, and the question encoder to the image's
patches, so a token's heat is its attention over the question (mean over heads of the decoder's last
layers, at the step that chose it) times each question token's attention over the patches (the same
mean over the encoder's cross-attention).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vlmq.tasks.adapters import _hf
from vlmq.tasks.adapters.base import GenerationHooks, ModelAdapter, WorkItem

HEAT_METHOD = (f"answer decoder attention to the question (mean over heads and the last {_hf.HEAT_LAYERS} layers, at "
               "the step that chose each token) times the question encoder's cross-attention to the image patches "
               "(the same mean)")


class BlipVqaAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset({"vqa", "explain"})

    def setup(self) -> None:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self.model = _hf.load_pretrained(self, BlipForQuestionAnswering)
        self.processor = _hf.load_processor(self, BlipProcessor)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "right"  # the question encoder is bidirectional, BERT-style

    def input_size(self) -> tuple[int, int] | None:
        return _hf.input_size(self.processor)

    def prepare(self, items: list[WorkItem]) -> _hf.Prepared:
        return _hf.questions(self, items)

    def predict(self, batch: _hf.Prepared, hooks: GenerationHooks) -> list[dict | Exception]:
        results = list(batch.results)
        for rows, inputs in batch.parts:
            answers = self._answer(batch.items[rows[0]].params, inputs, len(rows), _hf.subset_hooks(hooks, rows))
            for row, (answer, ending) in zip(rows, answers, strict=True):
                if "tokens" in ending:  # explain
                    results[row] = {"text": answer, **ending}
                else:
                    results[row] = {"answer": answer, "scores": None, **ending}
        return results

    def _answer(self, params: Any, inputs, count: int, hooks: GenerationHooks
                ) -> list[tuple[str, dict[str, Any]]]:
        """Per row, its answer and its ending (the question's tokens and the image's are its prompt)."""
        model = self.model
        inputs = _hf.to_model(inputs, model)
        text_config = model.config.text_config
        with torch.inference_mode():
            image_embeds = model.vision_model(pixel_values=inputs["pixel_values"])[0]
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            question_embeds = model.text_encoder(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
                return_dict=False,
            )[0]
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            answers: list[tuple[str, dict[str, Any]]] = [("", {})] * count
            for rows in _hf.group_rows(lengths):
                length = lengths[rows[0]]
                states = question_embeds[rows, :length]
                bos = torch.full(
                    (len(rows), 1), model.decoder_start_token_id, dtype=torch.long, device=states.device
                )
                out = model.text_decoder.generate(
                    input_ids=bos,
                    eos_token_id=text_config.sep_token_id,
                    pad_token_id=text_config.pad_token_id,
                    encoder_hidden_states=states,
                    encoder_attention_mask=torch.ones(
                        states.shape[:-1], dtype=torch.long, device=states.device
                    ),
                    **_hf.generation(params, _hf.subset_hooks(hooks, rows), self.tokenizer, len(rows)),
                )
                texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
                ended = _hf.texts_and_endings(params, texts, [length + _hf.image_tokens(model)] * len(rows), out[:, 1:],
                                              text_config.sep_token_id, text_config.pad_token_id)
                if params.type == "explain":
                    heats = self._heat(inputs["input_ids"][rows, :length], image_embeds[rows], states, out)
                    for i, (_text, ending) in enumerate(ended):
                        _hf.add_heats(ending, self.tokenizer, out[i, 1:], heats[i], _hf.patch_grid(model), HEAT_METHOD)
                for row, (text, ending) in zip(rows, ended, strict=True):
                    answers[row] = (text.strip(), ending)
        return answers

    def _heat(self, question_ids: torch.Tensor, image_embeds: torch.Tensor, states: torch.Tensor,
              out: torch.Tensor) -> torch.Tensor:
        """(rows, answer tokens, patches): each answer token's heat over the image, through the question.
        Row i of the result is the heat of `out[:, i + 1]` (the decoder's query i chose it)."""
        model = self.model
        ones = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        encoder = model.text_encoder(input_ids=question_ids, attention_mask=torch.ones_like(question_ids),
                                     encoder_hidden_states=image_embeds, encoder_attention_mask=ones,
                                     output_attentions=True, return_dict=True)
        to_image = _hf.patch_heat(encoder.cross_attentions)  # (rows, question, patches)
        decoder = model.text_decoder(input_ids=out, encoder_hidden_states=states,
                                     encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long,
                                                                       device=states.device),
                                     output_attentions=True, return_dict=True)
        to_question = _hf.patch_heat(decoder.cross_attentions, skip=0)  # (rows, answer, question)
        return _hf.normalised(to_question @ to_image)


Adapter = BlipVqaAdapter
