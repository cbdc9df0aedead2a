"""PaliGemma (`PaliGemmaForConditionalGeneration`): detection, captions and answers from task prompts.

google/paligemma-3b-mix-224 (or -448, PaliGemma 2 mix), or the demo model. One model, several job
types, each a PaliGemma task prompt (`PROMPTS`, whose keys are the adapter's `tasks`), its text read
back by `READ`:

* detect:  ``detect dog ; person`` -> ``<loc0256><loc0128><loc0768><loc0896> dog ; <loc...>x4 person``:
  four location tokens per box (y0 x0 y1 x1, 0..1023 on the model's square input), then the label;
  `parse_loc_boxes` turns them into pixel boxes on the original image.
* caption: ``caption en`` (or the job's own prompt, e.g. ``caption es``).
* vqa:     ``answer en <question>``.
* ocr:     ``ocr``.
* segment: ``segment cat ; dog`` -> per object its four location tokens, 16 ``<segNNN>`` mask codes
  and the label; the codes decode to a 64x64 mask through the VQ-VAE decoder whose weights the
  registry's `mask_decoder` names (`_paligemma_masks`), placed into the box on the whole image.

Prompts of different lengths share one batch: the tokenizer pads on the left, and PaliGemma takes
its positions from the attention mask, so each row generates what it would alone.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from vlmq import rle
from vlmq.jobtypes import OUTPUTS
from vlmq.jobtypes.detect import Box
from vlmq.tasks.adapters import _hf, _paligemma_masks
from vlmq.tasks.adapters.base import GenerationHooks, ModelAdapter, WorkItem

#: Location tokens are 0..1023 bins of the normalised image side.
LOC_BINS = 1024

# One detection: exactly four <locNNNN> tokens, optional segmentation tokens, then the label text up to
# the next location token or ";" separator.
_ENTRY = re.compile(
    r"(?P<locs>(?:<loc\d{4}>){4})(?:<seg\d{3}>)*\s*(?P<label>[^<;]*)",
)
_LOC = re.compile(r"<loc(\d{4})>")
# One segmented object: four <locNNNN> tokens, its <segNNN> mask codes, then its label.
_OBJECT = re.compile(r"(?P<locs>(?:<loc\d{4}>){4})\s*(?P<segs>(?:<seg\d{3}>\s*)*)(?P<label>[^<;]*)")
_SEG = re.compile(r"<seg(\d{3})>")


def loc_box(locs: str, width: int, height: int) -> dict[str, float] | None:
    """The box of four ``<locNNNN>`` tokens (y0, x0, y1, x1 in 0..1023, normalised to the image side:
    ``x = v / 1024 * width``) in pixels of a `width` x `height` image, put in order, clamped to the
    image and rounded to 1/100 pixel; None for a value above 1023 or a box with no area."""
    values = [int(v) for v in _LOC.findall(locs)]
    if len(values) != 4 or any(v >= LOC_BINS for v in values):
        return None
    y0, y1 = sorted(values[0::2])
    x0, x1 = sorted(values[1::2])
    px0, px1 = (min(max(v / LOC_BINS * width, 0.0), float(width)) for v in (x0, x1))
    py0, py1 = (min(max(v / LOC_BINS * height, 0.0), float(height)) for v in (y0, y1))
    if px1 <= px0 or py1 <= py0:
        return None
    return {"x0": round(px0, 2), "y0": round(py0, 2), "x1": round(px1, 2), "y1": round(py1, 2)}


def parse_loc_boxes(text: str, width: int, height: int) -> list[Box]:
    """The boxes of a PaliGemma detection output, in pixels of a `width` x `height` image.

    Each entry is four ``<locNNNN>`` tokens (`loc_box`), then the label; entries are separated by
    `` ; ``. Malformed entries are skipped: fewer than four location tokens, a value above 1023, an
    empty label, or a box with no area.
    """
    boxes: list[Box] = []
    for match in _ENTRY.finditer(text):
        box, label = loc_box(match.group("locs"), width, height), match.group("label").strip()
        if box is not None and label:
            boxes.append(Box(label=label, **box))
    return boxes


def read_objects(text: str, width: int, height: int, decoder: _paligemma_masks.MaskDecoder) -> list[dict[str, Any]]:
    """The objects of a `segment` answer: label, box, mask (RLE over the whole image) and area, or a
    warning for an object whose codes are missing or malformed. Entries without a box (`loc_box`) or
    a label are skipped, as `parse_loc_boxes` skips them."""
    found: list[tuple[dict[str, Any], list[int] | None]] = []
    for match in _OBJECT.finditer(text):
        box, label = loc_box(match.group("locs"), width, height), match.group("label").strip()
        if box is None or not label:
            continue
        obj: dict[str, Any] = {"label": label, **box}
        codes: list[int] | None = [int(v) for v in _SEG.findall(match.group("segs"))]
        if len(codes) != _paligemma_masks.CODES or any(c >= _paligemma_masks.CODEBOOK for c in codes):
            obj["warning"] = (f"the model wrote {len(codes)} of {_paligemma_masks.CODES} mask codes"
                              if len(codes) != _paligemma_masks.CODES
                              else f"a mask code is out of range (0..{_paligemma_masks.CODEBOOK - 1})")
            codes = None
        found.append((obj, codes))
    decodable = [codes for _obj, codes in found if codes is not None]
    if decodable:
        masks = iter(decoder(torch.tensor(decodable, dtype=torch.long, device=decoder.embedding.device))
                     .float().cpu().numpy())
        for obj, codes in found:
            if codes is not None:
                full = _paligemma_masks.place(next(masks), (obj["x0"], obj["y0"], obj["x1"], obj["y1"]), width, height)
                obj["mask"] = rle.encode(full)
                obj["area"] = int(full.sum())
    return [obj for obj, _codes in found]


#: The task prompt of a job, per job type this adapter runs.
PROMPTS: dict[str, Callable[[Any], str]] = {
    "detect": lambda params: params.prompt,
    "caption": lambda params: (params.prompt or "").strip() or "caption en",
    "vqa": lambda params: f"answer en {params.question}",
    "ocr": lambda params: "ocr",
    "segment": lambda params: params.prompt,
}


def _detect_output(item: WorkItem, text: str) -> dict:
    width, height = item.image.size
    boxes = parse_loc_boxes(text, width, height)
    return {"boxes": [box.model_dump() for box in boxes], "width": width, "height": height, "text": text.strip()}


#: The output of a job from the model's text, per job type (the others answer the text).
READ: dict[str, Callable[[WorkItem, str], dict]] = {
    "detect": _detect_output,
    "vqa": lambda item, text: {"answer": text.strip(), "scores": None},
}


class PaliGemmaAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset(PROMPTS)

    def setup(self) -> None:
        from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

        self.model = _hf.load_pretrained(self, PaliGemmaForConditionalGeneration)
        self.processor = _hf.load_processor(self, PaliGemmaProcessor)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.mask_decoder = None
        if "segment" in self.spec.tasks:
            path = Path(self.source, self.spec.mask_decoder or "")  # an absolute path stays as it is
            self.mask_decoder = _paligemma_masks.MaskDecoder.from_npz(path).to(self.model.device)

    @staticmethod
    def prompt_for(params: Any) -> str:
        return PROMPTS[params.type](params)

    def input_size(self) -> tuple[int, int] | None:
        return _hf.input_size(self.processor)

    def prepare(self, items: list[WorkItem]) -> _hf.Prepared:
        results, prompts, rows = _hf.prompts_for(items, self.prompt_for)
        batch = _hf.Prepared(items, results)
        if rows:
            with warnings.catch_warnings():  # the processor's training labels: numpy copy= deprecation noise
                warnings.simplefilter("ignore", DeprecationWarning)
                inputs = _hf.local(self.processor)(
                    images=[_hf.rgb(items[r].image) for r in rows],
                    text=[self.image_token + prompt for prompt in prompts],
                    padding="longest",
                    return_tensors="pt",
                )
            inputs.pop("labels", None)
            batch.parts.append((rows, _hf.staged(inputs, self.model)))
        return batch

    def predict(self, batch: _hf.Prepared, hooks: GenerationHooks) -> list[dict | Exception]:
        results = list(batch.results)
        if batch.parts:
            (rows, inputs), = batch.parts
            items = [batch.items[r] for r in rows]
            answers = self._generate(items, inputs, _hf.subset_hooks(hooks, rows))
            for row, item, (text, ending) in zip(rows, items, answers, strict=True):
                results[row] = self._output(item, text, ending)
        return results

    def _generate(self, items: list[WorkItem], inputs, hooks: GenerationHooks
                  ) -> list[tuple[str, dict[str, Any]]]:
        inputs = _hf.to_model(inputs, self.model)
        prompt_length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = self.model.generate(**inputs, **_hf.generation(items[0].params, hooks, self.tokenizer, len(items)))
        generated = _hf.new_tokens(out, prompt_length)
        # skip_special_tokens drops <eos>/<pad> but keeps <locNNNN>/<segNNN> (ordinary added tokens).
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return _hf.texts_and_endings(items[0].params, texts, inputs["attention_mask"].sum(dim=1).tolist(), generated,
                                     _hf.eos_ids(self.model), self.tokenizer.pad_token_id)

    def _output(self, item: WorkItem, text: str, ending: dict[str, Any]) -> dict:
        if item.params.type == "segment":
            width, height = item.image.size
            objects = read_objects(text, width, height, self.mask_decoder)
            return {"objects": objects, "width": width, "height": height, "text": text.strip()}
        read = READ.get(item.params.type)
        output = read(item, text) if read else {"text": text.strip()}
        if "usage" in OUTPUTS[item.params.type].model_fields:
            output.update(ending)
        return output


Adapter = PaliGemmaAdapter
