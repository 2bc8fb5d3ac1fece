"""The outbox on real SQLite files: seqs, bounds, drops, and what survives a reopen."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edge.drivers.base import Priority
from edge.outbox import Outbox


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _payload(size: int) -> bytes:
    return b"x" * size


def _append(box: Outbox, stream: str, priority: Priority, size: int = 100) -> int:
    seq, _ = box.append(stream, priority, lambda s: (f"t/{stream}/{s}", _payload(size)))
    return seq


def test_seqs_are_gap_free_per_stream_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_bytes=1 << 20, max_age_s=60)
    assert [_append(box, "rfid/a", Priority.EVENT) for _ in range(3)] == [1, 2, 3]
    assert _append(box, "ack", Priority.CONTROL) == 1
    assert box.next_bd_seq() == 1
    box.close()
    box = Outbox(path, max_bytes=1 << 20, max_age_s=60)
    assert _append(box, "rfid/a", Priority.EVENT) == 4
    assert box.stream_positions() == {"ack": 1, "rfid/a": 4}
    assert (box.depth, box.stats().bytes) == (5, 500)
    assert box.next_bd_seq() == 2
    assert [p.seq for p in box.pending(0, 10) if p.stream == "rfid/a"] == [1, 2, 3, 4]


def test_a_failed_build_assigns_no_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)

    def broken(seq: int) -> tuple[str, bytes]:
        raise ValueError("too large")

    with contextlib.suppress(ValueError):
        box.append("rfid/a", Priority.EVENT, broken)
    assert _append(box, "rfid/a", Priority.EVENT) == 1  # rolled back: still gap-free


def test_confirmed_messages_are_gone_per_stream_up_to_the_mark(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)
    for _ in range(3):
        _append(box, "s", Priority.EVENT)
        _append(box, "t", Priority.EVENT)
    assert box.confirm({"s": 2, "t": 0}) == 2
    assert box.confirm({"s": 2}) == 0  # the same mark again is harmless
    assert [(p.stream, p.seq) for p in box.pending(0, 10)] == [
        ("t", 1),
        ("t", 2),
        ("s", 3),
        ("t", 3),
    ]
    assert (box.depth, box.stats().bytes) == (4, 400)
    assert {s: h.kept_from for s, h in box.holdings().items()} == {"s": 3, "t": 1}
    first = box.pending(0, 1)[0]
    assert box.oldest_id() == first.id
    assert box.confirm({"t": 3, "s": 3}) == 4
    assert (box.depth, box.stats().bytes, box.oldest_id(), box.holdings()) == (0, 0, None, {})


def test_holdings_name_the_dropped_runs_the_cloud_must_not_wait_for(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)
    ids = {}
    for _ in range(12):
        seq = _append(box, "s", Priority.EVENT)
        ids[seq] = box.pending(0, 100)[-1].id
    for seq in (4, 5, 9, 11, 12):  # dropped: runs 4-5, 9, and 11-12 at the top
        box.drop(ids[seq], "test")
    box.confirm({"s": 1})
    holding = box.holdings()["s"]
    assert holding.kept_from == 2
    assert holding.dropped == [(4, 5), (9, 9), (11, 12)]
    # at most max_holes runs: kept_from moves up past the older ones
    newest = box.holdings(max_holes=2)["s"]
    assert (newest.kept_from, newest.dropped) == (6, [(9, 9), (11, 12)])


def test_overflow_drops_messages_not_sent_yet_before_sent_ones(tmp_path: Path) -> None:
    # A sent message may already be at the cloud; dropping it would count a drop for a seq
    # the cloud has. Within a priority, the unsent ones go first.
    box = Outbox(tmp_path / "o.db", max_bytes=1000, max_age_s=60)
    for _ in range(10):
        _append(box, "s", Priority.EVENT)
    box.sent_through = box.pending(0, 3)[-1].id  # seqs 1-3 were sent
    _append(box, "s", Priority.EVENT)
    _append(box, "s", Priority.EVENT)
    assert [p.seq for p in box.pending(0, 100)] == [1, 2, 3, 6, 7, 8, 9, 10, 11, 12]
    assert box.dropped() == {"overflow.event": 2}


def test_full_outbox_drops_lowest_priority_oldest_first_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_bytes=1000, max_age_s=60)
    _append(box, "control", Priority.CONTROL)
    _append(box, "snap", Priority.SNAPSHOT)
    _append(box, "event", Priority.EVENT)
    _append(box, "event", Priority.EVENT)
    for _ in range(6):
        _append(box, "sight", Priority.SIGHTING)
    assert box.stats().bytes == 1000
    assert box.stats().dropped == {}
    _append(box, "event", Priority.EVENT)  # over by 100: the oldest sighting goes
    remaining = [(p.stream, p.seq) for p in box.pending(0, 100)]
    assert ("sight", 1) not in remaining
    assert ("sight", 2) in remaining
    for _ in range(6):
        _append(box, "event", Priority.EVENT)  # sightings go first, then the oldest events
    remaining = [(p.stream, p.seq) for p in box.pending(0, 100)]
    assert not [r for r in remaining if r[0] == "sight"]
    assert ("control", 1) in remaining
    assert ("snap", 1) in remaining
    assert ("event", 1) not in remaining
    assert ("event", 9) in remaining
    assert box.stats().bytes <= 1000
    assert box.dropped() == {"overflow.sighting": 6, "overflow.event": 1}
    box.close()
    assert Outbox(path, max_bytes=1000, max_age_s=60).dropped()["overflow.sighting"] == 6


def test_expired_messages_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60, clock=clock)
    _append(box, "s", Priority.EVENT)
    clock.now += 30
    _append(box, "s", Priority.CONTROL)
    assert box.stats().oldest_age_s == 30
    clock.now += 31
    assert box.expire() == 1
    assert [p.seq for p in box.pending(0, 10)] == [2]
    assert box.dropped() == {"expired.event": 1}


def test_synchronous_full_is_applied(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60, synchronous="full")
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_birth_tells_the_cloud_what_the_outbox_holds_and_dropped(tmp_path: Path) -> None:
    from edge.lifecycle import Lifecycle

    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)
    for _ in range(6):
        _append(box, "rfid/r1", Priority.EVENT)
    _append(box, "ack", Priority.CONTROL)
    box.drop(box.pending(0, 100)[3].id, "test")  # rfid seq 4
    box.confirm({"rfid/r1": 2, "ack": 1})
    [birth] = Lifecycle("s1", "n1", "1.0", box).birth(1, [])
    streams = {p.stream: p for p in birth.streams}
    assert (streams["rfid/r1"].seq, streams["rfid/r1"].kept_from) == (6, 3)
    assert [(r.first, r.last) for r in streams["rfid/r1"].dropped] == [(4, 4)]
    assert (streams["ack"].kept_from, streams["ack"].dropped) == (2, [])  # holds none


async def test_a_mark_above_our_own_position_deletes_nothing(tmp_path: Path) -> None:
    # A retained mark from before this node's counters were reset (new SD card) must not
    # delete messages the cloud never had.
    import asyncio

    from edge.forwarder import Forwarder
    from edge.uplink import Uplink, Will
    from protocols.mqtt import MqttSettings

    box = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)
    for _ in range(5):
        _append(box, "s", Priority.EVENT)
    uplink = Uplink(  # never started: confirm() does not touch the network
        MqttSettings(),
        "test",
        inflight=4,
        will=lambda: Will("t", b""),
        on_connected=lambda _s: None,
        on_disconnected=lambda: None,
        on_message=lambda _t, _p: None,
    )
    forwarder = Forwarder(box, uplink, rate=100, window=4)
    forwarder.confirm({"s": 500, "other": 1})
    await asyncio.sleep(0)
    assert box.depth == 5
    forwarder.confirm({"s": 3})
    await asyncio.sleep(0)
    assert [p.seq for p in box.pending(0, 10)] == [4, 5]
    assert forwarder.confirmed == 3
