"""What one group worker holds, and which members go when another must come in.

A group worker holds at most `max_loaded` members (loading or ready) and, with a memory budget, at
most that many bytes of weights. A member that failed to load is held too, without weights and
without counting, while its jobs are failed (tasks/group_worker.py).

Eviction takes the least used member: the lowest use score (vlmq/fleet.py: the member's job count
across the group's workers, each job's weight halving every `HALF_LIFE_JOBS` jobs the group runs,
kept when the member leaves), ties going to the least recently used here (its last batch, or its
load); a member that never ran a job scores lowest. On a Zipf-skewed stream this keeps the popular
members and cycles the rare ones through the remaining slots (plain LRU evicts a popular member
whenever a few rare ones pass by: benchmarks/groups.py simulates both). Members that still have jobs
queued are spared; they go too, in the same order, once the newcomer has been starved (its oldest
job waited `STARVE_S`). A newcomer's weights are estimated from its last load here, else from its
files on disk, else as the mean of what is held. With a budget, one member larger than the budget
still loads alone.

`make_room` is the rule itself, over any worker's holdings: a group worker also applies it to what the
others announce, and leaves a newcomer to the one whose room costs least (`room_cost`), as one cache
of all the workers' slots would.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmq.fleet import GroupWorkerInfo, HeldModel, WorkerState

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz")


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
    leaving: bool = False  # being evicted: no longer consuming, its last batches finishing
    failed_until: float = 0.0  # state error: monotonic time until which its new jobs are failed

    @property
    def counted(self) -> bool:
        return self.state is not WorkerState.error

    def view(self) -> HeldModel:
        return HeldModel(self.name, self.state, self.load_s, self.weights_bytes, self.revision, self.error)

    def slot(self) -> Slot:
        return Slot(self.name, self.counted, self.state is WorkerState.ready and not self.leaving,
                    self.weights_bytes, self.last_used)


@dataclass(frozen=True)
class Slot:
    """A held member as an eviction sees it."""

    name: str
    counted: bool  # takes a slot and memory (not a failed member)
    evictable: bool  # ready, and not already leaving
    weights_bytes: int = 0
    last_used: float = 0.0

    @classmethod
    def of(cls, held: HeldModel) -> Slot:
        """Another worker's member, as it announced it."""
        return cls(held.model, held.state is not WorkerState.error, held.state is WorkerState.ready,
                   held.weights_bytes)


def least_used_first(slots: Iterable[Slot], scores: Mapping[str, float]) -> list[Slot]:
    """Eviction order: the lowest use score first (none: lowest of all), ties to the least recently used."""
    return sorted(slots, key=lambda s: (scores.get(s.name, -math.inf), s.last_used))


def make_room(slots: Iterable[Slot], max_loaded: int, max_memory_bytes: int | None, incoming_bytes: int,
              backlogged: set[str], starving: bool, scores: Mapping[str, float]) -> list[Slot] | None:
    """Members to evict, least used first, so that one more of `incoming_bytes` fits; None: no room
    can be made now (members still loading, or all busy and nobody starving)."""
    counted = [s for s in slots if s.counted]
    count, used = len(counted), sum(s.weights_bytes for s in counted)
    ready = least_used_first((s for s in counted if s.evictable), scores)
    candidates = [s for s in ready if s.name not in backlogged]
    if starving:
        candidates += [s for s in ready if s.name in backlogged]

    def fits() -> bool:
        if count + 1 > max_loaded:
            return False
        return max_memory_bytes is None or count == 0 or used + incoming_bytes <= max_memory_bytes

    chosen = []
    for slot in candidates:
        if fits():
            break
        chosen.append(slot)
        count, used = count - 1, used - slot.weights_bytes
    return chosen if fits() else None


def room_cost(victims: list[Slot], scores: Mapping[str, float]) -> float:
    """What making room loses: the highest use score evicted (a free slot: -inf)."""
    return max((scores.get(v.name, -math.inf) for v in victims), default=-math.inf)


def cheaper_elsewhere(others: Iterable[GroupWorkerInfo], incoming_bytes: int, backlogged: set[str],
                      scores: Mapping[str, float], cost: float) -> bool:
    """One of `others` (as they announced themselves) makes room for a newcomer losing less than `cost`."""
    for worker in others:
        victims = make_room([Slot.of(h) for h in worker.held], worker.max_loaded, worker.max_memory_bytes,
                            incoming_bytes, backlogged, False, scores)
        if victims is not None and room_cost(victims, scores) < cost:
            return True
    return False


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

    def touch(self, name: str) -> None:
        """`name` ran a batch."""
        with self.lock:
            member = self.members.get(name)
            if member is not None:
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

    def victims(self, incoming_bytes: int, backlogged: set[str], starving: bool,
                scores: Mapping[str, float]) -> list[str] | None:
        """`make_room` over this worker's members: their names."""
        with self.lock:
            slots = [m.slot() for m in self.members.values()]
        chosen = make_room(slots, self.max_loaded, self.max_memory_bytes, incoming_bytes, backlogged, starving, scores)
        return None if chosen is None else [slot.name for slot in chosen]

    def over_budget(self, keep: str, scores: Mapping[str, float]) -> list[str]:
        """After a load measured more than estimated: members to evict (least used first, never `keep`)
        until the weights held are within the budget again."""
        if self.max_memory_bytes is None:
            return []
        with self.lock:
            used = self.used_bytes()
            ready = least_used_first((m.slot() for m in self.counted() if m.name != keep), scores)
        chosen = []
        for slot in ready:
            if used <= self.max_memory_bytes:
                break
            if slot.evictable:
                chosen.append(slot.name)
                used -= slot.weights_bytes
        return chosen
