"""The ingest queue is fair between stores: a full queue sheds only the store holding more
than twice its share, and batches are drawn round-robin."""

from __future__ import annotations

import logging

import pytest

from cloud.ingest.fairness import FairQueue, store_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_store_of_reads_the_store_level() -> None:
    assert store_of("storegate/v1/store-042/pi-1/rfid/r1") == "store-042"
    assert store_of("storegate/v1/store-042") == ""
    assert store_of("nonsense") == ""


def test_below_capacity_nothing_is_shed_whatever_the_mix() -> None:
    queue: FairQueue[int] = FairQueue(100, min_share=1, clock=Clock())
    assert all(queue.push("hog", i) for i in range(99))
    assert queue.push("quiet", 0)
    assert len(queue) == 100
    assert queue.shed_total == 0


def test_a_full_queue_sheds_the_hog_at_exactly_twice_its_share() -> None:
    queue: FairQueue[int] = FairQueue(100, min_share=1, clock=Clock())
    queue.push("quiet", 0)
    for i in range(99):
        assert queue.push("hog", i)
    # Full (100 held), two stores heard: share 50. The hog holds 99 < 2 x 50: accepted.
    assert queue.fair_share() == 50
    assert queue.push("hog", 99)
    assert queue.shed_total == 0
    assert not queue.push("hog", 100)  # it holds 100 = twice its share: shed
    assert queue.shed_total == 1
    assert queue.push("quiet", 1)  # within its share: accepted, over capacity
    assert len(queue) == 102


def test_one_store_alone_is_never_shed_and_quiet_stores_leave_the_share() -> None:
    clock = Clock()
    queue: FairQueue[int] = FairQueue(10, min_share=1, active_window_s=10, clock=clock)
    queue.push("other", 0)
    queue.take(1)
    for i in range(10):
        assert queue.push("only", i)  # below capacity: anything goes
    assert not queue.push("only", 10)  # full; "other" heard lately: share 5, holds 10
    clock.now += 11  # "other" is quiet now: "only" is alone, its share is the capacity
    assert queue.fair_share() == 10
    assert queue.push("only", 11)
    assert queue.shed_total == 1


def test_batches_are_round_robin_and_fifo_per_store() -> None:
    queue: FairQueue[str] = FairQueue(1000, clock=Clock())
    for i in range(300):
        queue.push("hog", f"h{i}")
    queue.push("quiet", "q0")
    queue.push("quiet", "q1")
    batch = queue.take(10)
    assert "q0" in batch  # a quiet store waits one batch at most
    assert "q1" in batch
    hog = [x for x in batch if x.startswith("h")]
    assert hog == [f"h{i}" for i in range(len(hog))]
    rest = queue.take(1000)
    assert rest == [f"h{i}" for i in range(len(hog), 300)]
    assert len(queue) == 0


def test_shedding_is_reported_once_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    queue: FairQueue[int] = FairQueue(10, min_share=1, clock=clock)
    queue.push("quiet", 0)
    with caplog.at_level(logging.WARNING, logger="cloud.ingest"):
        for i in range(100):
            queue.push("hog", i)
        queue.report()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1
        assert "store 'hog'" in lines[0]
        clock.now += 61
        queue.report()
        lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "hog: " in lines[1]
