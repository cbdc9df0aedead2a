"""The semantic tier: GPTCache (sqlite + faiss + LRU eviction) holding paraphrasable questions.

GPTCache is the engine: a `gptcache.Cache` whose data manager is GPTCache's own `SSDataManager`
over `CacheBase("sqlite")` and `VectorBase("faiss")` with its memory LRU eviction
(`max_size=cache_max_entries`); lookups go through `gptcache.adapter.api.get`, which searches
faiss, reads the sqlite rows and asks our `ScopedEvaluation` (similarity.py) to rank each
neighbour against `Config.similarity_threshold` (= `cache_similarity`); inserts through
`Cache.import_data`.

One faiss index holds every scope. The vector of an entry is

    [ MiniLM(question) (384, unit) , LAMBDA * scope_vector(scope digest) (64, unit) ]

(GPTCache then scales it to unit length). Two entries of one scope differ only in the question
part, so their squared distance is |dq|^2 / (1 + LAMBDA^2) <= 4 / 17; entries of two scopes also
differ by LAMBDA^2 |ds|^2 / 17 where |ds|^2 = 2 - 2 cos(scope vectors) ~ 2 +- 0.35: with LAMBDA = 4
any other scope's entry is farther than every same-scope entry unless two 64-d Gaussian
directions have cosine above 0.875 (probability far below 1e-20), so the nearest neighbours
are the scope's own questions. The search also drops neighbours farther than the distance
a same-scope entry at the similarity threshold can have, so GPTCache reads sqlite rows only
for candidates that can still match.

Files, under `settings.cache_dir / "semantic"`: ``sqlite.db`` (GPTCache's tables; each row
keeps the vector, so it is the truth), ``faiss.index`` (written on close and every
`flush_interval_s` when changed; rebuilt from sqlite at start when it disagrees, e.g. after a
crash), ``meta.json`` (vector layout: a mismatch starts empty), ``revisions.json`` (the weights
revision last seen per model), ``lock`` (one process owns the folder; a second one runs an
in-memory tier in a temporary folder instead). Unreadable files are moved aside
(``*.corrupt-<time>``) and the tier starts empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from gptcache.manager.data_manager import SSDataManager

from vlmq.cache.embedding import DIM, MODEL_NAME, QuestionEmbedder
from vlmq.cache.scope import SCOPE_DIM, scope_vector
from vlmq.cache.similarity import ScopedEvaluation, entry_text, parse_entry

log = logging.getLogger(__name__)

LAMBDA = 4.0
VECTOR_DIM = DIM + SCOPE_DIM
TOP_K = 8
FORMAT = {"format": 1, "embedding": MODEL_NAME, "question_dim": DIM, "scope_dim": SCOPE_DIM,
          "lambda": LAMBDA, "entry": "digest\\x1fquestion\\x1fmodel"}
_CHUNK = 500  # ids per SQL IN (...)
_FILES = ("sqlite.db", "sqlite.db-wal", "sqlite.db-shm", "faiss.index")


@dataclass(frozen=True)
class SemanticHit:
    job_id: str
    question: str
    similarity: float


def max_distance(similarity: float) -> float:
    """Largest squared L2 distance (unit vectors) of a same-scope entry with cosine >= similarity."""
    return (2.0 - 2.0 * similarity) / (1.0 + LAMBDA**2) + 1e-6


def tier_vector(question_vec: np.ndarray, digest: str) -> np.ndarray:
    return np.concatenate([question_vec, LAMBDA * scope_vector(digest)]).astype(np.float32)


def _gptcache_deps_present() -> bool:
    """GPTCache pip-installs a missing faiss or SQLAlchemy at import; never let it."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("faiss", "sqlalchemy"))


class SemanticTier:
    def __init__(
        self,
        folder: Path,
        embedder: QuestionEmbedder,
        *,
        ttl_s: float,
        max_entries: int,
        similarity: float,
        top_k: int = TOP_K,
        flush_interval_s: float = 30.0,
    ) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self.similarity = float(similarity)
        self.top_k = int(top_k)
        self.flush_interval_s = float(flush_interval_s)
        self._lock = threading.RLock()
        self._gpt: Any = None  # gptcache.Cache once open
        self._dir: Path | None = None  # where the files are (folder, or a temp dir)
        self._ephemeral = False
        self._lock_file: Any = None
        self._revisions: dict[str, str] = {}
        self._pending_revisions: dict[str, str] = {}  # checked before the store was open
        self._expired: list[int] = []
        self._dirty = False
        self._opened = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Open the store and load the embedding, now or in a background thread."""
        if background:
            self.embedder.start_background()
            opener = threading.Thread(target=self._open_quietly, name="vlmq-cache-open", daemon=True)
            opener.start()
            self._threads.append(opener)
        else:
            self.embedder.load()
            self._open()
        flusher = threading.Thread(target=self._maintain, name="vlmq-cache-flush", daemon=True)
        flusher.start()
        self._threads.append(flusher)

    @property
    def ready(self) -> bool:
        return self._opened.is_set() and self.embedder.ready and self._gpt is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._opened.wait(timeout):
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.embedder.wait(left) and self.ready

    def _open_quietly(self) -> None:
        try:
            self._open()
        except Exception as exc:
            self.error = exc
            log.exception("cache: the semantic tier could not open %s; it stays off", self.folder)

    def _open(self) -> None:
        if not _gptcache_deps_present():
            raise RuntimeError("faiss-cpu and SQLAlchemy must be installed for the semantic tier")
        with self._lock:
            if self._closing.is_set():
                return
            self._dir = self._claim_folder()
            self._check_format(self._dir)
            try:
                self._gpt = self._build(self._dir)
            except Exception:
                log.exception("cache: semantic store in %s is unreadable; moving it aside", self._dir)
                self._move_aside(self._dir)
                self._check_format(self._dir)
                self._gpt = self._build(self._dir)
            self._revisions = self._read_revisions()
            self._sweep_expired()
            for model, revision in self._pending_revisions.items():
                self._check_revision_locked(model, revision)
            self._pending_revisions.clear()
            self._opened.set()

    def _claim_folder(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / "lock", "a+")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            temp = Path(tempfile.mkdtemp(prefix="vlmq-cache-"))
            log.warning("cache: %s is used by another process; this one keeps its semantic tier in %s "
                        "(not persisted)", self.folder, temp)
            self._ephemeral = True
            return temp
        self._lock_file = handle
        return self.folder

    def _check_format(self, folder: Path) -> None:
        meta = folder / "meta.json"
        try:
            current = json.loads(meta.read_text()) if meta.exists() else None
        except (OSError, ValueError):
            current = "unreadable"
        if current is not None and current != FORMAT:
            log.warning("cache: semantic store in %s has another layout (%s); starting empty",
                        folder, current)
            self._move_aside(folder)
        if current != FORMAT:
            meta.write_text(json.dumps(FORMAT))

    def _move_aside(self, folder: Path) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in _FILES:
            path = folder / name
            if path.exists():
                path.replace(folder / f"{name}.corrupt-{stamp}")

    def _build(self, folder: Path) -> Any:
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase
        from gptcache.processor.post import first
        from gptcache.processor.pre import get_prompt

        scalar = CacheBase("sqlite", sql_url=f"sqlite:///{folder / 'sqlite.db'}")
        _tune_sqlite(scalar)
        vector = VectorBase(
            "faiss", dimension=VECTOR_DIM, index_path=str(folder / "faiss.index"), top_k=self.top_k
        )
        if vector._index.d != VECTOR_DIM:
            raise ValueError(f"faiss index has {vector._index.d} dimensions, expected {VECTOR_DIM}")
        self._reconcile(scalar, vector)
        manager = _ScopedDataManager(
            scalar, vector, max_size=self.max_entries, max_distance=max_distance(self.similarity)
        )
        cache = Cache()
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=self._vector,
            data_manager=manager,
            similarity_evaluation=ScopedEvaluation(self.ttl_s, on_expired=self._expired.append),
            post_process_messages_func=first,
            # flushing is ours (timer and close), not every N puts
            config=Config(similarity_threshold=self.similarity, auto_flush=1_000_000_000,
                          disable_report=True),
        )
        return cache

    def _reconcile(self, scalar: Any, vector: Any) -> None:
        """Make faiss hold exactly sqlite's live rows (it lags after a crash: sqlite commits each put)."""
        import faiss

        scalar.clear_deleted_data()
        live = sorted(scalar.get_ids(deleted=False))
        index = vector._index
        present = sorted(int(i) for i in faiss.vector_to_array(index.id_map)) if index.ntotal else []
        if live == present:
            return
        log.info("cache: rebuilding the faiss index from sqlite (%d rows, index had %d)",
                 len(live), len(present))
        index.reset()
        with scalar.Session() as session:
            rows = (session.query(scalar._ques.id, scalar._ques.embedding_data)
                    .filter(scalar._ques.deleted == 0).all())
        good = [(r.id, np.frombuffer(r.embedding_data, dtype=np.float32)) for r in rows if r.embedding_data]
        good = [(i, v) for i, v in good if v.shape == (VECTOR_DIM,)]
        if good:
            index.add_with_ids(np.stack([v for _, v in good]), np.array([i for i, _ in good], dtype=np.int64))
        bad = sorted(set(live) - {i for i, _ in good})
        if bad:
            scalar.mark_deleted(bad)
            scalar.clear_deleted_data()
        vector.flush()

    # --- the GPTCache embedding function ------------------------------------------------------

    def _vector(self, prompt: str, **_: Any) -> np.ndarray:
        entry = parse_entry(prompt)
        if entry is None:
            raise ValueError("not a semantic-tier entry")
        return tier_vector(self.embedder.embed(entry.question), entry.digest)

    # --- operations (each under the lock; the embedding is computed before taking it) -----------

    def lookup(self, digest: str, model: str, question: str) -> SemanticHit | None:
        if not self.ready:
            return None
        from gptcache.adapter.api import get

        prompt = entry_text(digest, question, model)
        self._vector(prompt)  # fills the embedder's memo outside the lock
        hits: list[tuple[Any, float]] = []
        with self._lock:
            if self._gpt is None:
                return None
            answer = get(prompt, cache_obj=self._gpt, top_k=self.top_k, hit_callback=hits.extend)
            if self._expired:
                self._drop(self._expired[:])
                self._expired.clear()
        if answer is None or not hits:
            return None
        entry = parse_entry(hits[0][0])
        return SemanticHit(
            job_id=str(answer), question=entry.question if entry else "", similarity=float(hits[0][1])
        )

    def put(self, digest: str, model: str, question: str, job_id: str) -> bool:
        if not self.ready:
            return False
        prompt = entry_text(digest, question, model)
        self._vector(prompt)
        with self._lock:
            if self._gpt is None:
                return False
            self._gpt.import_data([prompt], [job_id])
            self._dirty = True
        return True

    def forget(self, job_id: str) -> int:
        """Drop every entry whose answer is `job_id`."""
        with self._lock:
            if self._gpt is None:
                return 0
            scalar = self._gpt.data_manager.s
            with scalar.Session() as session:
                rows = session.query(scalar._answer.question_id).filter(scalar._answer.answer == job_id).all()
            return self._drop([r.question_id for r in rows])

    def clear(self, model: str | None = None) -> int:
        with self._lock:
            if self._gpt is None:
                return 0
            scalar = self._gpt.data_manager.s
            with scalar.Session() as session:
                rows = (session.query(scalar._ques.id, scalar._ques.question)
                        .filter(scalar._ques.deleted == 0).all())
            ids = []
            for row in rows:
                entry = parse_entry(row.question)
                if model is None or (entry is not None and entry.model == model):
                    ids.append(row.id)
            return self._drop(ids)

    def check_revision(self, model: str, revision: str) -> bool:
        """True (and the model's entries dropped) when this store last saw another revision."""
        with self._lock:
            if self._gpt is None:  # not open yet: checked when it opens
                self._pending_revisions[model] = revision
                return False
            return self._check_revision_locked(model, revision)

    def _check_revision_locked(self, model: str, revision: str) -> bool:
        before = self._revisions.get(model)
        if before == revision:
            return False
        if before is not None:
            dropped = self.clear(model)
            log.info("cache: %s changed revision %s -> %s; dropped %d semantic entries",
                     model, before, revision, dropped)
        self._revisions[model] = revision
        self._write_revisions()
        return before is not None

    def count(self) -> int:
        with self._lock:
            if self._gpt is None:
                return 0
            return int(self._gpt.data_manager.s.count(state=0))

    def flush(self) -> None:
        with self._lock:
            if self._gpt is not None and self._dirty:
                self._gpt.data_manager.flush()
                self._dirty = False

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
        with self._lock:
            if self._gpt is not None:
                try:
                    self._dirty = True
                    self.flush()
                    self._gpt.data_manager.close()
                    self._gpt.data_manager.s._engine.dispose()
                finally:
                    # GPTCache closes its data manager again at exit: make that a no-op.
                    self._gpt.data_manager = _Closed()
                    self._gpt = None
            if self._lock_file is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None
            if self._ephemeral and self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._opened.clear()

    # --- internals --------------------------------------------------------------------------------

    def _drop(self, ids: list[int]) -> int:
        """Delete rows and vectors now (with the rows GPTCache's eviction only marked), in chunks."""
        if not ids:
            return 0
        manager = self._gpt.data_manager
        scalar, vector = manager.s, manager.v
        wanted = {int(i) for i in ids}
        marked = set(scalar.get_ids(deleted=True))
        dropped = 0
        todo = sorted(wanted | marked)
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start : start + _CHUNK]
            with scalar.Session() as session:
                session.query(scalar._answer).filter(scalar._answer.question_id.in_(chunk)).delete()
                session.query(scalar._ques_dep).filter(scalar._ques_dep.question_id.in_(chunk)).delete()
                session.query(scalar._session).filter(scalar._session.question_id.in_(chunk)).delete()
                live = (session.query(scalar._ques.id)
                        .filter(scalar._ques.id.in_(chunk), scalar._ques.deleted == 0).all())
                dropped += sum(1 for row in live if row.id in wanted)
                session.query(scalar._ques).filter(scalar._ques.id.in_(chunk)).delete()
                session.commit()
            vector.delete(np.array(chunk, dtype=np.int64))
        lru = getattr(manager.eviction_base, "_cache", None)
        if lru is not None:
            for i in wanted:
                lru.pop(i, None)
        self._dirty = True
        return dropped

    def _sweep_expired(self) -> int:
        if self._gpt is None:
            return 0
        scalar = self._gpt.data_manager.s
        cutoff = datetime.now() - timedelta(seconds=self.ttl_s)
        with scalar.Session() as session:
            rows = (session.query(scalar._ques.id)
                    .filter(scalar._ques.deleted == 0, scalar._ques.create_on < cutoff).all())
        return self._drop([r.id for r in rows])

    def _maintain(self) -> None:
        """Every flush interval: drop expired entries, write the faiss index if it changed."""
        interval = max(0.05, min(self.flush_interval_s, self.ttl_s))
        while not self._closing.wait(interval):
            try:
                with self._lock:
                    if self._gpt is None:
                        continue
                    self._sweep_expired()
                    self.flush()
            except Exception:
                log.exception("cache: semantic tier maintenance failed")

    def _read_revisions(self) -> dict[str, str]:
        path = (self._dir or self.folder) / "revisions.json"
        try:
            data = json.loads(path.read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_revisions(self) -> None:
        path = (self._dir or self.folder) / "revisions.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._revisions, sort_keys=True))
        tmp.replace(path)


class _Closed:
    """Stands in for a closed data manager (GPTCache registers an at-exit close per Cache)."""

    def close(self) -> None:
        pass

    def flush(self) -> None:
        pass


#: GPTCache's tables have no index but their primary keys: each candidate it reads looks up its
#: answer by question id, `forget` looks rows up by job id and the TTL sweep by age.
_INDEXES = (
    ("vlmq_answer_question", "gptcache_answer", "question_id"),
    ("vlmq_answer_job", "gptcache_answer", "answer"),
    ("vlmq_dep_question", "gptcache_question_dep", "question_id"),
    ("vlmq_session_question", "gptcache_session", "question_id"),
    ("vlmq_question_created", "gptcache_question", "create_on"),
)


def _tune_sqlite(scalar: Any) -> None:
    """WAL and synchronous=NORMAL (a put commits in well under a millisecond), and indexes."""
    from sqlalchemy import event

    engine = scalar._engine

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()
    with engine.begin() as conn:
        for name, table, column in _INDEXES:
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")


class _ScopedDataManager(SSDataManager):
    """GPTCache's SSDataManager; its search keeps only neighbours near enough to match."""

    def __init__(self, scalar: Any, vector: Any, *, max_size: int, max_distance: float) -> None:
        super().__init__(scalar, vector, None, None, max_size=max_size, clean_size=None, policy="LRU")
        self.max_distance = max_distance

    def search(self, embedding_data: Any, **kwargs: Any) -> list:
        found = super().search(embedding_data, **kwargs) or []
        return [(d, i) for d, i in found if i >= 0 and math.isfinite(d) and d <= self.max_distance]
