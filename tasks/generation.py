"""Token streaming and per-item stopping for batched `generate()` calls.

`BatchTextStreamer` turns the token ids that `generate()` emits for a whole batch into each item's
new text; `CancelledRows` stops the rows whose job was cancelled while the others go on;
`StopStrings` stops a row once its new text holds one of the job's `stop` strings, and `cut_at_stop`
ends a text before the first one (the streamer never hands on what the cut would drop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class BatchTextStreamer(BaseStreamer):
    """Calls `on_text(row, new_text)` as each row's decoded text grows, at most every `interval_s`
    (a write per token per row would cost more than the token). The prompt is skipped."""

    def __init__(self, tokenizer: Any, batch_size: int, on_text: Callable[[int, str], None],
                 interval_s: float = 0.05, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
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
        if self.stop:
            text, stopped = cut_at_stop(text, self.stop)
            if not final and not stopped:  # hold back what may be the start of a stop string
                text = text[: len(text) - _stop_prefix(text, self.stop)]
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


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """(the text before the first of the `stop` strings in it, whether there was one)."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def _stop_prefix(text: str, stop: Sequence[str]) -> int:
    """How long the end of `text` that is the start of a stop string is (0: none)."""
    return max((n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)


class StopStrings(StoppingCriteria):
    """Stops each row once its generated text holds one of the `stop` strings.

    The text is decoded, so any tokenizer works (wordpiece, byte-level BPE, sentencepiece); only the
    last tokens are decoded at each step, enough to hold the longest stop string however it was cut
    into tokens. The first call sees the prompt and one new token: what came before is the prompt.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.window = 4 * max(len(s) for s in self.stop) + 4  # a character may take several byte tokens
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1] - 1
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in tail for s in self.stop) for tail in tails], dtype=torch.bool,
                            device=input_ids.device)
