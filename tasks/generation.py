"""Token streaming and per-item stopping for batched `generate()` calls.

`BatchTextStreamer` turns the token ids that `generate()` emits for a whole batch into each item's
new text; `CancelledRows` stops the rows whose job was cancelled while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class BatchTextStreamer(BaseStreamer):
    """Calls `on_text(row, new_text)` as each row's decoded text grows, at most every `interval_s`
    (a write per token per row would cost more than the token). The prompt is skipped."""

    def __init__(self, tokenizer: Any, batch_size: int, on_text: Callable[[int, str], None],
                 interval_s: float = 0.05) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.interval_s = interval_s
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]
        self.sent = [""] * batch_size
        self.prompt_seen = False
        self.sent_at = time.monotonic()

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt ids
            self.prompt_seen = True
            return
        rows = value.reshape(len(self.ids), -1).tolist()
        for row, tokens in enumerate(rows):
            self.ids[row].extend(tokens)
        if time.monotonic() - self.sent_at >= self.interval_s:
            self.sent_at = time.monotonic()
            for row in range(len(self.ids)):
                self._emit(row, final=False)

    def end(self) -> None:
        for row in range(len(self.ids)):
            self._emit(row, final=True)

    def _emit(self, row: int, final: bool) -> None:
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):  # half of a multi-byte character: wait
            return
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            self.on_text(row, text[len(self.sent[row]) :])
            self.sent[row] = text


class CancelledRows(StoppingCriteria):
    """Stops each row whose item `is_cancelled(item)`.

    generate() expands each item into consecutive rows (beams, and models that repeat their image
    embeddings per beam themselves), so row r belongs to item r * batch_size // rows.
    """

    def __init__(self, is_cancelled: Callable[[int], bool], batch_size: int) -> None:
        self.is_cancelled = is_cancelled
        self.batch_size = batch_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        rows = input_ids.shape[0]
        flags = [self.is_cancelled(row * self.batch_size // rows) for row in range(rows)]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
