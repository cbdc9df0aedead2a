"""Helpers shared by the transformers adapters (private: not an adapter, `load_adapter_class` refuses it)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmq.jobtypes import GenerativeParams
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, SetupError, WorkItem


def load_pretrained(adapter: ModelAdapter, loader: Callable[..., Any]) -> Any:
    """`loader.from_pretrained(source, dtype=..., device_map=..., ...)` with setup errors made clear.

    The precision / device checks (`load_kwargs`) run first, so a bad spec (quantization on a CPU
    host) fails with its own reason before any weight is read.
    """
    kwargs = adapter.load_kwargs()
    try:
        model = loader.from_pretrained(adapter.source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise SetupError(
            f"model {adapter.spec.name}: cannot load {getattr(loader, '__name__', loader)} "
            f"from {adapter.source!r}: {exc}"
        ) from exc
    model.eval()
    return model


def load_processor(adapter: ModelAdapter, loader: Any = None) -> Any:
    """The model's processor (image processor + tokenizer) from the same source and revision."""
    if loader is None:
        from transformers import AutoProcessor as loader
    kwargs: dict[str, Any] = {}
    if adapter.spec.revision:
        kwargs["revision"] = adapter.spec.revision
    try:
        return loader.from_pretrained(adapter.source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise SetupError(
            f"model {adapter.spec.name}: cannot load the processor from {adapter.source!r}: {exc}"
        ) from exc


@dataclass
class Prepared:
    """What a transformers adapter's `prepare` hands its `predict`: the items, the results known
    already (an `ItemError` in the row of an item this model cannot run: a prompt its chat template
    refuses, say), and the model inputs of
    each part of the batch that runs as one call (its rows, and whatever that call needs)."""

    items: list[WorkItem]
    results: list[Any]
    parts: list[tuple[list[int], Any]] = field(default_factory=list)


_local = threading.local()


def local(processor: Any) -> Any:
    """This thread's copy of a processor (its tokenizer's settings, padding side included, copied
    too): `prepare` runs in another thread than the `predict` that decodes with the original."""
    copies = getattr(_local, "copies", None)
    if copies is None:
        copies = _local.copies = {}
    key = id(processor)
    if key not in copies:
        copies[key] = copy.deepcopy(processor)
    return copies[key]


def input_size(processor: Any) -> tuple[int, int] | None:
    """The least (width, height) a processor's resize leaves an image at: its fixed size, or its
    shortest edge (as both: the long side only grows), or None when it does not say."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if not getattr(image_processor, "do_resize", True) or size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    if get("height") and get("width"):
        return int(get("width")), int(get("height"))
    if get("shortest_edge"):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return None


def staged(batch: Any, model: Any) -> Any:
    """A processor's output ready to move to the model: floating tensors (pixels) in its dtype, and
    on CUDA in pinned memory, so `to_model` copies without blocking (done in `prepare`)."""
    if not hasattr(batch, "to"):
        return batch
    batch = batch.to(dtype=model.dtype)
    if model.device.type == "cuda":
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                batch[key] = value.pin_memory()
    return batch


def to_model(batch: Any, model: Any) -> Any:
    """Move a processor's output to the model's device; floating tensors (pixels) to its dtype. From
    pinned memory (`staged`) the copy is asynchronous."""
    if not hasattr(batch, "to"):
        return batch
    if model.device.type == "cuda":
        return batch.to(model.device, dtype=model.dtype, non_blocking=True)
    return batch.to(model.device, dtype=model.dtype)


def rgb(image: Any) -> Any:
    return image if image.mode == "RGB" else image.convert("RGB")


def subset_hooks(hooks: GenerationHooks, rows: Sequence[int]) -> GenerationHooks:
    """Hooks for a sub-batch made of the items `rows` (local row i is item rows[i])."""
    rows = list(rows)
    on_text = None
    if hooks.on_text is not None:
        parent_on_text = hooks.on_text

        def on_text(row: int, text: str) -> None:
            parent_on_text(rows[row], text)

    is_cancelled = None
    if hooks.is_cancelled is not None:
        parent_is_cancelled = hooks.is_cancelled

        def is_cancelled(row: int) -> bool:
            return parent_is_cancelled(rows[row])

    return GenerationHooks(on_text=on_text, is_cancelled=is_cancelled, stream_interval_s=hooks.stream_interval_s)


def prompts_for(items: Sequence[WorkItem], prompt: Callable[[Any], str]
                ) -> tuple[list[Any], list[str], list[int]]:
    """(results with each item's `ItemError` in its row, the valid items' prompts, their rows)."""
    results: list[Any] = [None] * len(items)
    prompts: list[str] = []
    rows: list[int] = []
    for row, item in enumerate(items):
        try:
            prompts.append(prompt(item.params))
        except ItemError as exc:
            results[row] = exc
        else:
            rows.append(row)
    return results, prompts, rows


def group_rows(keys: Sequence[Any]) -> list[list[int]]:
    """Row indices grouped by equal key, groups in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def questions(adapter: Any, items: Sequence[WorkItem], **processor_kwargs: Any) -> Prepared:
    """One part: every item's image and question through the adapter's processor (padded, truncated),
    staged for its model (the VQA adapters' `prepare`). An item without a question (an `explain`
    job may have none) fails alone."""
    batch = Prepared(list(items), [None] * len(items))
    rows = [row for row, item in enumerate(items) if item.params.question]
    for row in set(range(len(items))) - set(rows):
        batch.results[row] = ItemError(f"model {adapter.spec.name} answers questions: give the job a question")
    if rows:
        inputs = local(adapter.processor)(
            images=[rgb(items[r].image) for r in rows],
            text=[items[r].params.question for r in rows],
            padding=True,
            truncation=True,
            return_tensors="pt",
            **processor_kwargs,
        )
        batch.parts.append((rows, staged(inputs, adapter.model)))
    return batch


def generation(params: GenerativeParams, hooks: GenerationHooks, tokenizer: Any, rows: int) -> dict[str, Any]:
    """Every `generate()` argument of a job: its params' (`generate_kwargs()`: tokens, beams, decoding)
    and the worker's hooks (text streaming, cancellation, the job's `stop` strings) for a batch of `rows`."""
    kwargs = params.generate_kwargs()
    return {**kwargs, **hooks.generate_kwargs(tokenizer, rows, kwargs["num_beams"], stop_of(params))}


def stop_of(params: Any) -> tuple[str, ...]:
    """The job's `stop` strings (a type without them has none)."""
    return tuple(getattr(params, "stop", None) or ())


def texts_and_endings(params: Any, texts: Sequence[str], prompt_tokens: Sequence[int], generated: torch.Tensor,
                      end_ids: Any, pad_id: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Per row, its text ended before its first `stop` string, and the rest of its output: `usage`
    (its prompt tokens, given: padding not counted; the tokens it generated up to and including its
    end token, or the token that completed its stop string) and `finish_reason` (`length` when it
    used every token it was allowed without ending). `generated` holds only the new part; what
    follows a row's end is padding (`pad_id`, or an end token)."""
    from vlmq.tasks.generation import cut_at_stop

    stop = stop_of(params)
    ends = [end_ids] if isinstance(end_ids, int) else [i for i in (end_ids or []) if i is not None]
    out = []
    for text, prompt, tokens in zip(texts, prompt_tokens, generated.tolist(), strict=True):
        text, stopped = cut_at_stop(text, stop)
        marks = [*ends, pad_id] if stopped and pad_id is not None else ends
        at = next((i for i, token in enumerate(tokens) if token in marks), None)
        if at is None:  # no end token: it ran to its limit, or its stop string ended on the last token
            length, ended = len(tokens), stopped
        else:  # a stop string's row ends on the token before its padding; an end token counts
            length, ended = (at if stopped else at + 1), True
        reason = "length" if not ended and length >= params.max_new_tokens else "stop"
        out.append((text, {"usage": {"prompt_tokens": int(prompt), "completion_tokens": length},
                           "finish_reason": reason}))
    return out


def image_tokens(model: Any) -> int:
    """What a BLIP-style vision encoder hands the text model per image: a token per patch, and [CLS]."""
    vision = model.config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def eos_ids(model: Any) -> Any:
    """The token ids that end a model's generation."""
    return getattr(getattr(model, "generation_config", None), "eos_token_id", None)


def new_tokens(sequences: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The generated part of decoder-only `generate()` output (prompt, left padding included, cut)."""
    return sequences[:, prompt_length:]


#: How many of a model's last layers an `explain` heatmap averages (all of them when it has fewer).
HEAT_LAYERS = 4


def mean_attention(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """(rows, queries, keys): the mean over heads of the last `HEAT_LAYERS` layers' attention (each
    (rows, heads, queries, keys))."""
    return torch.stack([a.float() for a in attentions[-HEAT_LAYERS:]]).mean(dim=(0, 2))


def normalised(heat: torch.Tensor) -> torch.Tensor:
    """Each row of the last dimension scaled to sum 1."""
    return heat / heat.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def patch_heat(attentions: Sequence[torch.Tensor], skip: int = 1) -> torch.Tensor:
    """(rows, queries, patches) attention to the image's patches: `mean_attention`, the first `skip`
    keys (a [CLS] token) left out, normalised to sum 1."""
    return normalised(mean_attention(attentions)[..., skip:])


def patch_grid(model: Any) -> list[int]:
    """[rows, columns] of a BLIP-style vision encoder's patches."""
    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size
    return [side, side]


def add_heats(ending: dict[str, Any], tokenizer: Any, generated: torch.Tensor, heat: torch.Tensor,
              grid: list[int], method: str) -> None:
    """An `explain` output's own fields, added to one row's `ending` (`texts_and_endings`): `grid`,
    `method`, and `tokens`: each token it generated (`generated`, up to its end) that is text (not an
    end or padding token), decoded on its own, with its heat (`heat[i]`: the row of the step that
    chose token i)."""
    from vlmq.jobtypes.explain import encode_heat

    special = set(tokenizer.all_special_ids)
    tokens = generated[: ending["usage"]["completion_tokens"]].tolist()
    grid_heat = heat.cpu().numpy()
    ending.update(grid=grid, method=method, tokens=[{"text": tokenizer.decode([token]), "heat": encode_heat(grid_heat[i])}
                                                    for i, token in enumerate(tokens) if token not in special])
