"""The worker's flush rule for a partial batch (tasks/batching.py), decision by decision."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from vlmq.tasks.batching import ModelGate, QueueAwareBatches, keep_waiting

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


def test_batches_take_the_model_in_the_order_they_were_flushed() -> None:
    """The second batch finishes preparing first, yet waits for the first one's turn (an interactive
    job flushed first is never overtaken by a bulk batch flushed after it)."""
    gate, order = ModelGate(), []
    gate.started("first")
    gate.started("second")

    def run(key: str, prepare_s: float) -> None:
        time.sleep(prepare_s)
        with gate.predicting(key):
            order.append(key)
        gate.ended(key)

    threads = [threading.Thread(target=run, args=("first", 0.2)), threading.Thread(target=run, args=("second", 0.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second"]


def test_a_batch_that_ends_before_the_model_does_not_hold_up_the_next() -> None:
    gate = ModelGate()
    gate.started("failed-early")
    gate.started("next")
    gate.ended("failed-early")  # raised while loading its images: never asked for the model
    with gate.predicting("next"):
        pass
    with gate.predicting():  # a caller outside the flush order (tools, benchmarks) is not held
        pass


def test_an_idle_wait_under_the_loop_resolution_is_no_wait() -> None:
    class Task(QueueAwareBatches):
        name = "test.batching.idle-wait"
        max_wait = 0.2

    fast, slow = Task(), Task()
    fast.batch_took(0.020)  # 2% is 0.4 ms: the loop's timers could not wait that little
    slow.batch_took(2.0)  # 2% is 40 ms
    assert fast.idle_wait == 0.0 and abs(slow.idle_wait - 0.040) < 1e-9
    assert not keep_waiting(age=0.0, quiet=0.0, idle_wait=fast.idle_wait, max_wait=0.2, backlog=lambda: False)
    assert keep_waiting(age=0.0, quiet=0.0, idle_wait=fast.idle_wait, max_wait=0.2, backlog=lambda: True)


def test_a_flush_takes_at_most_one_batch_and_leaves_the_rest_buffered() -> None:
    class Task(QueueAwareBatches):
        name = "test.batching.cap"
        flush_every = 8

    task, flushed = Task(), []
    task.flush = lambda requests: flushed.append([r.n for r in requests])
    for n in range(11):  # piled up while both threads were busy
        task._buffer.put(SimpleNamespace(n=n, eta=None))
    task._do_flush()
    assert flushed == [list(range(8))] and task._buffer.qsize() == 3
    task._do_flush()  # the rest: the cap (max_wait 0.2 s) since the first arrival is long past
    assert flushed[1] == [8, 9, 10] and task._buffer.qsize() == 0
