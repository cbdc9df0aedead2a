"""What one group worker holds, and which members go when another must come in.

A group worker holds at most `max_loaded` members (loading or ready) and, with a memory budget, at
most that many bytes of weights. A member that failed to load is held too, without weights and
without counting, while its jobs are failed (tasks/group_worker.py).

Eviction takes the least used member: each member counts the jobs it ran here, halved every
`HALF_LIFE_JOBS` jobs the worker runs (a recency-weighted frequency; a member counts one job at its
load), ties going to the least recently used (its last batch, or its load). On a Zipf-skewed stream
this keeps the popular members and cycles the rare ones through the remaining slots (plain LRU
evicts a popular member whenever a few rare ones pass by: benchmarks/groups.py simulates both).
Members that still have jobs queued are spared; they go too, in the same order, once the newcomer
has been starved (its oldest job waited `STARVE_S`). A newcomer's weights are estimated from its last load
here, else from its files on disk, else as the mean of what is held. With a budget, one member
larger than the budget still loads alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmq.fleet import HeldModel, WorkerState

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz")
HALF_LIFE_JOBS = 64


@dataclass
class Member:
    name: str
    state: WorkerState = WorkerState.loading
    runner: Any = None  # a ModelRunner once ready (or failing its jobs, state error)
    weights_bytes: int = 0
    load_s: float | None = None
    revision: str | None = None
    error: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    uses: float = 1.0  # jobs run here, decayed (the one it was loaded for counts)
    leaving: bool = False  # being evicted: no longer consuming, its last batches finishing
    failed_until: float = 0.0  # state error: monotonic time until which its new jobs are failed

    @property
    def counted(self) -> bool:
        return self.state is not WorkerState.error

    def view(self) -> HeldModel:
        return HeldModel(self.name, self.state, self.load_s, self.weights_bytes, self.revision, self.error)


class Holdings:
    def __init__(self, max_loaded: int, max_memory_bytes: int | None = None) -> None:
        self.max_loaded = max_loaded
        self.max_memory_bytes = max_memory_bytes
        self.members: dict[str, Member] = {}
        self.sizes: dict[str, int] = {}  # the last measured weights of each member loaded here
        self.loads = 0
        self.evictions = 0
        self.lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def touch(self, name: str, jobs: int = 1) -> None:
        """`name` ran a batch of `jobs`: every member's count decays by that many jobs, its own grows."""
        factor = 0.5 ** (jobs / HALF_LIFE_JOBS)
        with self.lock:
            for member in self.members.values():
                member.uses *= factor
            member = self.members.get(name)
            if member is not None:
                member.uses += jobs
                member.last_used = time.monotonic()

    def counted(self) -> list[Member]:
        return [m for m in self.members.values() if m.counted]

    def used_bytes(self) -> int:
        return sum(m.weights_bytes for m in self.counted())

    def views(self) -> tuple[HeldModel, ...]:
        with self.lock:
            return tuple(m.view() for m in self.members.values())

    # --- changes (the loader thread) ---------------------------------------------------------

    def begin(self, name: str) -> Member:
        with self.lock:
            member = self.members[name] = Member(name)
            return member

    def loaded(self, name: str, runner: Any, weights_bytes: int, load_s: float, revision: str) -> None:
        with self.lock:
            member = self.members[name]
            member.state, member.runner, member.weights_bytes = WorkerState.ready, runner, weights_bytes
            member.load_s, member.revision, member.last_used = load_s, revision, time.monotonic()
            self.sizes[name] = weights_bytes
            self.loads += 1

    def failed(self, name: str, runner: Any, error: str, hold_s: float) -> None:
        with self.lock:
            member = self.members[name]
            member.state, member.runner, member.error = WorkerState.error, runner, error
            member.failed_until = time.monotonic() + hold_s

    def remove(self, name: str) -> Member | None:
        with self.lock:
            member = self.members.pop(name, None)
            if member is not None and member.counted and member.runner is not None:
                self.evictions += 1
            return member

    # --- decisions ----------------------------------------------------------------------------

    def estimate(self, name: str, folder: str | None = None) -> int:
        """The weights a member will take: as last loaded here, else its files, else the mean held."""
        if name in self.sizes:
            return self.sizes[name]
        if folder and Path(folder).is_dir():
            on_disk = sum(p.stat().st_size for pattern in WEIGHT_FILES for p in Path(folder).rglob(pattern))
            if on_disk:
                return on_disk
        held = [m.weights_bytes for m in self.counted() if m.weights_bytes]
        return sum(held) // len(held) if held else 0

    def victims(self, incoming_bytes: int, backlogged: set[str], starving: bool) -> list[str] | None:
        """Members to evict, least used first, so that one more of `incoming_bytes` fits;
        None: no room can be made now (members still loading, or all busy and nobody starving)."""
        with self.lock:
            counted = self.counted()
            count, used = len(counted), sum(m.weights_bytes for m in counted)
            ready = sorted((m for m in counted if m.state is WorkerState.ready and not m.leaving),
                           key=lambda m: (m.uses, m.last_used))
            candidates = [m for m in ready if m.name not in backlogged]
            if starving:
                candidates += [m for m in ready if m.name in backlogged]

        def fits() -> bool:
            if count + 1 > self.max_loaded:
                return False
            return self.max_memory_bytes is None or count == 0 or used + incoming_bytes <= self.max_memory_bytes

        chosen = []
        for member in candidates:
            if fits():
                break
            chosen.append(member.name)
            count, used = count - 1, used - member.weights_bytes
        return chosen if fits() else None

    def over_budget(self, keep: str) -> list[str]:
        """After a load measured more than estimated: members to evict (least used first, never `keep`)
        until the weights held are within the budget again."""
        if self.max_memory_bytes is None:
            return []
        with self.lock:
            used = self.used_bytes()
            ready = sorted((m for m in self.counted() if m.state is WorkerState.ready and not m.leaving
                            and m.name != keep), key=lambda m: (m.uses, m.last_used))
        chosen = []
        for member in ready:
            if used <= self.max_memory_bytes:
                break
            chosen.append(member.name)
            used -= member.weights_bytes
        return chosen
