"""The model adapter protocol: `setup()` once, `predict(batch)` many times.

One adapter class wraps one model family (one file in this package, named in the registry's
`adapter` field). A worker process serves exactly one registry model and drives its adapter:

1. ``adapter = AdapterClass(spec, source)``: cheap, reads no weights.
2. ``adapter.setup()``: once per worker process, before any job is taken: the real
   ``from_pretrained`` path (hub id or local folder), dtype / quantization / device from the spec.
   An exception here is a *setup failure*, reported on the model (``GET /v1/models``), never a
   job failure.
3. ``batch = adapter.prepare(items)``, then ``adapter.predict(batch, hooks)``: many times. ``items``
   is a non-empty list of `WorkItem` of one job type whose `batch_key`s are equal, so they may share
   one forward pass. The job type is always one of the adapter's `tasks`: the registry refuses an
   entry whose tasks its adapter does not declare (`check_registry`), and the worker dispatches by
   type, so an adapter never checks what type it was given. `prepare` does the CPU work before the model (prompts, the processor: resizing,
   normalising, tokenising) and returns whatever its `predict` takes (by default the items
   themselves); the worker runs it outside the model's lock, for the next batch while the current one
   is in `predict`, so the model never waits for it. It may run in another thread than `predict`:
   use `_hf.local(...)` for a processor it shares. `predict` returns one entry per item, in order:
   the job type's output as a dict, or an `Exception` instance for an item that failed alone.
   Raising (in either) fails the call; the worker then retries each item on its own so that one bad
   item fails only its own job.

Generative adapters pass ``**_hf.generation(params, hooks, tokenizer, n)`` to ``model.generate``:
the job's own arguments (`GenerativeParams.generate_kwargs()`) and the hooks that stream each
item's text as it is produced and stop an item whose job was cancelled.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from vlmq.jobtypes import Params
from vlmq.registry import ModelSpec


class SetupError(RuntimeError):
    """The model cannot be loaded as configured (bad source, no CUDA for quantization, ...)."""


class ItemError(ValueError):
    """One item cannot be run by this model (bad prompt for it, say): fails that job alone."""

    code = "model_error"


@dataclass(frozen=True)
class WorkItem:
    job_id: str
    image: Image.Image  # RGB, EXIF orientation applied
    params: Params


@dataclass
class GenerationHooks:
    """Per-batch callbacks from the worker: stream text out, and ask whether a job was cancelled."""

    on_text: Callable[[int, str], None] | None = None
    is_cancelled: Callable[[int], bool] | None = None
    stream_interval_s: float = 0.05  # how often each item's new text is decoded and handed on

    def generate_kwargs(self, tokenizer: Any, batch_size: int, num_beams: int = 1, stop: Sequence[str] = ()
                        ) -> dict[str, Any]:
        """`streamer` (greedy or sampled, not beam search) and `stopping_criteria` (cancelled rows, the
        job's `stop` strings) for generate()."""
        from transformers import StoppingCriteriaList

        from vlmq.tasks.generation import BatchTextStreamer, CancelledRows, StopStrings

        kwargs: dict[str, Any] = {}
        if self.on_text is not None and num_beams == 1:
            kwargs["streamer"] = BatchTextStreamer(tokenizer, batch_size, self.on_text, self.stream_interval_s, stop)
        criteria = StoppingCriteriaList()
        if self.is_cancelled is not None:
            criteria.append(CancelledRows(self.is_cancelled, batch_size))
        if stop:
            criteria.append(StopStrings(tokenizer, stop))
        if criteria:
            kwargs["stopping_criteria"] = criteria
        return kwargs


class ModelAdapter(ABC):
    """Base of every adapter. Subclasses set `tasks` and implement `setup` and `predict`."""

    #: The job types this model family can run (the registry may allow fewer).
    tasks: ClassVar[frozenset[str]]

    def __init__(self, spec: ModelSpec, source: str) -> None:
        self.spec = spec
        self.source = source  # resolved: a hub id or a local folder

    @abstractmethod
    def setup(self) -> None: ...

    def prepare(self, items: list[WorkItem]) -> Any:
        """CPU work before the model, outside its lock (see the module's docstring). Default: none."""
        return items

    @abstractmethod
    def predict(self, batch: Any, hooks: GenerationHooks) -> list[dict | Exception]:
        """The model on what `prepare` returned: one output (or exception) per item, in order."""

    def input_size(self) -> tuple[int, int] | None:
        """(width, height) the model's image input needs at least: the worker decodes a JPEG at the
        smallest of 1, 1/2, 1/4, 1/8 of its size that is still as large (libjpeg's scaled decode), so
        a 12-megapixel photo for a 384-pixel model costs a fraction of a full decode. None: decode in
        full (the default; detect jobs always are: boxes and the annotated image are in original
        pixels)."""
        return None

    def run(self, items: list[WorkItem], hooks: GenerationHooks) -> list[dict | Exception]:
        """`prepare` then `predict`, in this thread (tests, tools, benchmarks)."""
        return self.predict(self.prepare(items), hooks)

    def batch_key(self, item: WorkItem) -> Hashable:
        """Items with equal keys may share a forward pass: by default, equal params but free text."""
        data = item.params.model_dump(mode="json")
        for free_text in ("question", "prompt", "messages"):
            data.pop(free_text, None)
        return json.dumps(data, sort_keys=True)

    def weights_bytes(self) -> int:
        """Bytes of the loaded weights: parameters and buffers of every torch module the adapter holds
        (a group worker's memory budget counts these)."""
        import torch

        seen: set[int] = set()
        total = 0
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                for tensor in (*value.parameters(), *value.buffers()):
                    if tensor.data_ptr() not in seen:
                        seen.add(tensor.data_ptr())
                        total += tensor.numel() * tensor.element_size()
        return total

    def revision(self) -> str:
        """What identifies these weights (cache scoping): a commit hash or a fingerprint of files."""
        from vlmq.tasks.fingerprint import weights_fingerprint

        return weights_fingerprint(self.source, self.spec.revision)

    # --- loading helpers shared by the transformers adapters ---------------------------------

    def load_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` keyword arguments for the spec's dtype, quantization and device."""
        from vlmq.tasks.precision import load_kwargs

        return load_kwargs(self.spec)
