"""A group worker's holdings: the least used member leaves (use scores shared by the group's workers,
kept across evictions), ties to the least recently used, members with jobs queued spared until the
newcomer starves, the memory budget, the estimate of a newcomer's weights, and the cost of making room
on another worker (what it announced)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import redis

from vlmq.fleet import HALF_LIFE_JOBS, Fleet, GroupWorkerInfo, HeldModel, WorkerState
from vlmq.keyspace import GROUP_CLOCK, GROUP_USES
from vlmq.tasks.holdings import Holdings, Slot, cheaper_elsewhere, make_room, room_cost

NONE: dict[str, float] = {}  # no member has run a job yet


def holding(*names: str, max_loaded: int = 3, budget: int | None = None, size: int = 100) -> Holdings:
    held = Holdings(max_loaded, budget)
    for name in names:
        held.begin(name)
        held.loaded(name, runner=object(), weights_bytes=size, load_s=0.1, revision="r")
        time.sleep(0.001)  # distinct use times, in this order
    return held


def test_without_scores_room_is_made_least_recently_used_first() -> None:
    held = holding("a", "b", "c")
    assert held.victims(100, backlogged=set(), starving=False, scores=NONE) == ["a"]
    held.touch("a")
    assert held.victims(100, backlogged=set(), starving=False, scores=NONE) == ["b"]
    assert holding("a", "b").victims(100, set(), False, NONE) == []  # a free slot: nobody leaves


def test_the_lowest_score_leaves_and_one_never_used_goes_first() -> None:
    held = holding("a", "b", "c")
    assert held.victims(100, set(), False, {"a": 5.0, "b": 1.0, "c": 3.0}) == ["b"]
    assert held.victims(100, set(), False, {"a": 5.0, "b": 1.0}) == ["c"]  # c ran nothing yet


def test_members_with_jobs_queued_stay_until_the_newcomer_starves() -> None:
    held = holding("a", "b", "c")
    assert held.victims(100, backlogged={"a"}, starving=False, scores=NONE) == ["b"]
    assert held.victims(100, backlogged={"a", "b", "c"}, starving=False, scores=NONE) is None
    assert held.victims(100, backlogged={"a", "b", "c"}, starving=True, scores=NONE) == ["a"]


def test_a_member_still_loading_is_never_a_victim() -> None:
    held = holding("a", max_loaded=1)
    held.begin("b")  # b loading: even with a gone there is no room for a third
    assert held.victims(100, set(), False, NONE) is None
    held.remove("a")
    assert held.victims(100, set(), False, NONE) is None  # b, loading, stays


def test_the_memory_budget_evicts_until_the_newcomer_fits() -> None:
    held = holding("a", "b", "c", max_loaded=10, budget=350)
    assert held.victims(50, set(), False, NONE) == []  # 300 + 50 fits
    assert held.victims(100, set(), False, NONE) == ["a"]  # 400 does not; 200 + 100 does
    assert held.victims(200, set(), False, NONE) == ["a", "b"]
    assert holding(budget=10).victims(500, set(), False, NONE) == []  # alone, a member larger than the budget loads


def test_a_failed_member_takes_no_slot_and_no_memory() -> None:
    held = holding("a", "b", max_loaded=2)
    held.begin("bad")
    held.failed("bad", runner=object(), error="no weights", hold_s=30)
    assert [m.name for m in held.counted()] == ["a", "b"] and held.used_bytes() == 200
    assert held.victims(100, set(), False, NONE) == ["a"]


def test_after_a_load_the_budget_is_restored_without_the_newcomer() -> None:
    held = holding("a", "b", "c", max_loaded=10, budget=250)
    assert held.over_budget(keep="c", scores=NONE) == ["a"]
    assert held.over_budget(keep="c", scores={"a": 2.0, "b": 1.0}) == ["b"]
    assert holding("a", max_loaded=10, budget=50).over_budget(keep="a", scores=NONE) == []


def test_a_newcomer_is_estimated_by_its_last_load_then_its_files_then_the_mean(tmp_path: Path) -> None:
    held = holding("a", "b", size=100)
    assert held.estimate("a") == 100
    (tmp_path / "model.safetensors").write_bytes(bytes(4096))
    (tmp_path / "config.json").write_text("{}")
    assert held.estimate("new", str(tmp_path)) == 4096
    assert held.estimate("hub/id", "hub/id") == 100
    assert Holdings(2).estimate("x") == 0


def test_the_cost_of_room_on_another_worker_is_read_from_its_announcement() -> None:
    def announced(*states: WorkerState) -> list[Slot]:
        return [Slot.of(HeldModel(f"m{i}", state, weights_bytes=100)) for i, state in enumerate(states)]

    scores = {"m0": 4.0, "m1": 2.0, "m2": 7.0}
    full = announced(WorkerState.ready, WorkerState.ready, WorkerState.ready)
    victims = make_room(full, 3, None, 100, set(), False, scores)
    assert [v.name for v in victims] == ["m1"] and room_cost(victims, scores) == 2.0
    assert room_cost(make_room(full[:2], 3, None, 100, set(), False, scores), scores) == -math.inf  # a free slot
    assert make_room(full, 3, None, 100, {"m0", "m1", "m2"}, False, scores) is None  # all busy
    failed = announced(WorkerState.ready, WorkerState.error, WorkerState.ready)
    assert make_room(failed, 3, None, 100, set(), False, scores) == []  # a failed member takes no slot
    loading = announced(WorkerState.loading, WorkerState.ready, WorkerState.ready)
    assert [v.name for v in make_room(loading, 3, None, 100, set(), False, scores)] == ["m1"]


def test_a_newcomer_is_left_to_the_worker_whose_room_costs_least() -> None:
    def worker(name: str, *held: str, max_loaded: int = 2) -> GroupWorkerInfo:
        return GroupWorkerInfo(name, "g", 1, tuple(HeldModel(m, WorkerState.ready, weights_bytes=100) for m in held),
                               max_loaded=max_loaded)

    scores = {"popular": 9.0, "rare": 1.0, "middling": 4.0}
    full_of_popular = [worker("w2", "popular", "middling")]
    assert not cheaper_elsewhere(full_of_popular, 100, set(), scores, cost=1.0)  # evicting rare here loses less
    assert cheaper_elsewhere(full_of_popular, 100, set(), scores, cost=5.0)  # middling there loses less
    assert cheaper_elsewhere([worker("w2", "popular")], 100, set(), scores, cost=1.0)  # a free slot there
    assert not cheaper_elsewhere([worker("w2", "popular")], 100, set(), scores, cost=-math.inf)  # one here too
    assert not cheaper_elsewhere(full_of_popular, 100, {"popular", "middling"}, scores, cost=5.0)  # all busy there


def test_use_scores_are_a_decayed_count_shared_by_the_group(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(GROUP_USES.format("g-uses"), GROUP_CLOCK.format("g-uses"))
    fleet = Fleet(client)
    fleet.note_uses("g-uses", "a", 10)  # popular, early
    fleet.note_uses("g-uses", "b", 1)
    fleet.note_uses("g-uses", "c", 1)  # b and c used after a, once each: LRU would evict a
    scores = fleet.uses("g-uses")
    assert min(scores, key=scores.get) == "b" and scores["a"] > scores["c"]
    assert math.isclose(2 ** scores["a"], 10 * 2 ** (10 / HALF_LIFE_JOBS))  # log2 of the forward-decayed count
    for _ in range(12):  # a runs nothing for 384 jobs: its count fades below theirs
        fleet.note_uses("g-uses", "b", 16)
        Fleet(client).note_uses("g-uses", "c", 16)  # another worker of the group counts into the same scores
    scores = fleet.uses("g-uses")
    assert min(scores, key=scores.get) == "a"
    assert int(client.get(GROUP_CLOCK.format("g-uses"))) == 12 + 12 * 32
