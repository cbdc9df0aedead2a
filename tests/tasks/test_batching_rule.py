"""The worker's flush rule for a partial batch (tasks/batching.py), decision by decision."""

from __future__ import annotations

from vlmq.tasks.batching import keep_waiting

IDLE, CAP = 0.040, 0.200


def test_a_lone_job_runs_once_the_worker_has_been_idle_for_the_idle_wait() -> None:
    assert keep_waiting(age=0.010, quiet=0.010, idle_wait=IDLE, max_wait=CAP, backlog=lambda: False)
    assert not keep_waiting(age=0.041, quiet=0.041, idle_wait=IDLE, max_wait=CAP, backlog=lambda: False)


def test_a_burst_keeps_the_batch_open_until_it_stops_or_the_cap() -> None:
    # the first job came 150 ms ago, the last 5 ms ago: jobs are still arriving
    assert keep_waiting(age=0.150, quiet=0.005, idle_wait=IDLE, max_wait=CAP, backlog=lambda: False)
    assert not keep_waiting(age=0.200, quiet=0.005, idle_wait=IDLE, max_wait=CAP, backlog=lambda: False)


def test_jobs_queued_in_redis_are_read_first_up_to_the_cap() -> None:
    assert keep_waiting(age=0.100, quiet=0.100, idle_wait=IDLE, max_wait=CAP, backlog=lambda: True)
    assert not keep_waiting(age=0.100, quiet=0.100, idle_wait=IDLE, max_wait=CAP, backlog=None)
    assert not keep_waiting(age=0.250, quiet=0.250, idle_wait=IDLE, max_wait=CAP, backlog=lambda: True)
