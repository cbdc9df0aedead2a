"""ViLT visual question answering (`ViltForQuestionAnswering`): a classifier over a fixed answer set.

dandelin/vilt-b32-finetuned-vqa, or the demo model. The answer is the top label; `scores` are the
`top_k` best labels with their sigmoid scores (ViLT is trained on VQA soft scores with a binary
cross-entropy per answer, so answers are scored independently), best first.

Mixed image sizes: the image processor resizes each image (shortest edge, size divisor) and pads
the batch to its largest height and width, returning a `pixel_mask`; ViLT interpolates its position
embeddings to each image's own valid patch grid and masks the padding patches, so an image scores
the same in a batch as alone.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vlmq.tasks.adapters import _hf
from vlmq.tasks.adapters.base import GenerationHooks, ModelAdapter, SetupError, WorkItem


class ViltVqaAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset({"vqa"})

    def setup(self) -> None:
        from transformers import ViltForQuestionAnswering, ViltProcessor

        self.model = _hf.load_pretrained(self, ViltForQuestionAnswering)
        self.processor = _hf.load_processor(self, ViltProcessor)
        self.processor.tokenizer.padding_side = "right"
        id2label = self.model.config.id2label or {}
        self.labels = [
            str(id2label.get(i, id2label.get(str(i), i))) for i in range(self.model.config.num_labels)
        ]
        if not self.labels:
            raise SetupError(f"model {self.spec.name}: the ViLT config has no answer labels (id2label)")
        self.max_text_length = int(self.model.config.max_position_embeddings)

    def input_size(self) -> tuple[int, int] | None:
        return _hf.input_size(self.processor)

    def prepare(self, items: list[WorkItem]) -> _hf.Prepared:
        return _hf.questions(self, items, max_length=self.max_text_length)

    def predict(self, batch: _hf.Prepared, hooks: GenerationHooks) -> list[dict | Exception]:
        results = list(batch.results)
        (rows, inputs), = batch.parts
        items = [batch.items[r] for r in rows]
        inputs = _hf.to_model(inputs, self.model)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        scores = logits.sigmoid()
        top_k = min(max(item.params.top_k for item in items), len(self.labels))
        values, indices = scores.topk(top_k, dim=-1)
        for i, row in enumerate(rows):
            k = min(items[i].params.top_k, len(self.labels))
            scored = [
                {"answer": self.labels[j], "score": round(float(v), 6)}
                for v, j in zip(values[i, :k].tolist(), indices[i, :k].tolist(), strict=True)
            ]
            results[row] = {"answer": scored[0]["answer"], "scores": scored}
        return results


Adapter = ViltVqaAdapter
