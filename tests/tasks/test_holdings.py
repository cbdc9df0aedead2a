"""A group worker's holdings: least recently used first, members with jobs queued spared until the
newcomer starves, the memory budget, and the estimate of a newcomer's weights."""

from __future__ import annotations

import time
from pathlib import Path

from vlmq.tasks.holdings import Holdings


def holding(*names: str, max_loaded: int = 3, budget: int | None = None, size: int = 100) -> Holdings:
    held = Holdings(max_loaded, budget)
    for name in names:
        held.begin(name)
        held.loaded(name, runner=object(), weights_bytes=size, load_s=0.1, revision="r")
        time.sleep(0.001)  # distinct use times, in this order
    return held


def test_room_is_made_least_recently_used_first() -> None:
    held = holding("a", "b", "c")
    assert held.victims(100, backlogged=set(), starving=False) == ["a"]
    held.touch("a")
    assert held.victims(100, backlogged=set(), starving=False) == ["b"]
    assert holding("a", "b").victims(100, set(), False) == []  # a free slot: nobody leaves


def test_a_popular_member_outlasts_rare_ones_used_after_it() -> None:
    held = holding("a", "b", "c")
    held.touch("a", jobs=10)  # popular
    held.touch("b")
    held.touch("c")  # b and c are used more recently than a, each once: LRU would evict a
    assert held.victims(100, set(), False) == ["b"]
    for _ in range(12):  # a is not used for many jobs: its count fades below the others'
        held.touch("b", jobs=16)
        held.touch("c", jobs=16)
    assert held.victims(100, set(), False) == ["a"]


def test_members_with_jobs_queued_stay_until_the_newcomer_starves() -> None:
    held = holding("a", "b", "c")
    assert held.victims(100, backlogged={"a"}, starving=False) == ["b"]
    assert held.victims(100, backlogged={"a", "b", "c"}, starving=False) is None
    assert held.victims(100, backlogged={"a", "b", "c"}, starving=True) == ["a"]


def test_a_member_still_loading_is_never_a_victim() -> None:
    held = holding("a", max_loaded=1)
    held.begin("b")  # b loading: even with a gone there is no room for a third
    assert held.victims(100, set(), False) is None
    held.remove("a")
    assert held.victims(100, set(), False) is None  # b, loading, stays


def test_the_memory_budget_evicts_until_the_newcomer_fits() -> None:
    held = holding("a", "b", "c", max_loaded=10, budget=350)
    assert held.victims(50, set(), False) == []  # 300 + 50 fits
    assert held.victims(100, set(), False) == ["a"]  # 400 does not; 200 + 100 does
    assert held.victims(200, set(), False) == ["a", "b"]
    assert holding(budget=10).victims(500, set(), False) == []  # alone, a member larger than the budget loads


def test_a_failed_member_takes_no_slot_and_no_memory() -> None:
    held = holding("a", "b", max_loaded=2)
    held.begin("bad")
    held.failed("bad", runner=object(), error="no weights", hold_s=30)
    assert [m.name for m in held.counted()] == ["a", "b"] and held.used_bytes() == 200
    assert held.victims(100, set(), False) == ["a"]


def test_after_a_load_the_budget_is_restored_without_the_newcomer() -> None:
    held = holding("a", "b", "c", max_loaded=10, budget=250)
    assert held.over_budget(keep="c") == ["a"]
    assert holding("a", max_loaded=10, budget=50).over_budget(keep="a") == []


def test_a_newcomer_is_estimated_by_its_last_load_then_its_files_then_the_mean(tmp_path: Path) -> None:
    held = holding("a", "b", size=100)
    assert held.estimate("a") == 100
    (tmp_path / "model.safetensors").write_bytes(bytes(4096))
    (tmp_path / "config.json").write_text("{}")
    assert held.estimate("new", str(tmp_path)) == 4096
    assert held.estimate("hub/id", "hub/id") == 100
    assert Holdings(2).estimate("x") == 0
