"""The commit marks the ingestor publishes to the edges (cloud/ingest/commits.py)."""

from __future__ import annotations

from cloud.ingest.commits import CommitMarks
from protocols.messages import Committed


def _marks(messages: list[Committed]) -> dict[tuple[str, str], dict[str, int]]:
    return {(m.store, m.node): {s.stream: s.seq for s in m.streams} for m in messages}


def test_one_message_per_node_with_news_carrying_all_its_streams() -> None:
    marks = CommitMarks()
    marks.note({("s1", "n1", "rfid/a"): 10, ("s1", "n1", "ack"): 2, ("s1", "n2", "ble/x"): 7})
    first = marks.take()
    assert _marks(first) == {("s1", "n1"): {"ack": 2, "rfid/a": 10}, ("s1", "n2"): {"ble/x": 7}}
    assert marks.take() == []  # nothing new: nothing published
    marks.note({("s1", "n1", "rfid/a"): 12})
    again = marks.take()
    # retained: the one message must carry every stream of the node, not only the one moved
    assert _marks(again) == {("s1", "n1"): {"ack": 2, "rfid/a": 12}}
    assert [m.seq for m in first + again] == [1, 1, 2]  # per node


def test_the_latest_mark_is_published_not_the_highest() -> None:
    # a node whose counters were reset: its birth took the cloud's position back down
    marks = CommitMarks()
    marks.note({("s1", "n1", "rfid/a"): 500})
    marks.take()
    marks.note({("s1", "n1", "rfid/a"): 3})
    assert _marks(marks.take()) == {("s1", "n1"): {"rfid/a": 3}}


def test_after_a_reconnect_every_node_is_published_again() -> None:
    marks = CommitMarks()
    marks.note({("s1", "n1", "rfid/a"): 5, ("s2", "n9", "rfid/b"): 8})
    marks.take()
    marks.resend_all()
    assert set(_marks(marks.take())) == {("s1", "n1"), ("s2", "n9")}
