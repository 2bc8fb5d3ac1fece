"""The size splitter: parts as full as the limit allows, and never over it."""

from __future__ import annotations

import pytest

from protocols.codec import encode
from protocols.messages import RfidSnapshot, ShelfCount
from protocols.sizing import (
    WORST_CASE_SEQ,
    entry_size,
    envelope_size,
    plan_parts,
    split_by_size,
)


def test_parts_fill_the_budget_exactly() -> None:
    assert plan_parts([10] * 10, 50) == [range(0, 5), range(5, 10)]
    assert plan_parts([10] * 10, 49) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_parts([10] * 7, 1000, max_entries=3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert plan_parts([], 10) == [range(0, 0)]
    with pytest.raises(ValueError, match="more than a whole part"):
        plan_parts([11], 10)


def test_split_messages_are_exactly_as_measured_and_never_over_the_limit() -> None:
    shelves = [ShelfCount(shelf=f"shelf-{i % 7}", gtin=f"{i:014d}", count=i) for i in range(9000)]
    envelope = RfidSnapshot(
        store="store-1", node="node-1", seq=WORST_CASE_SEQ, reader="r1", part=1, parts=1
    )
    limit = 100_000
    parts = split_by_size(shelves, envelope, max_bytes=limit, margin=0)
    assert [row for part in parts for row in part] == shelves
    base = envelope_size(envelope)
    for number, part in enumerate(parts):
        message = envelope.model_copy(update={"shelves": part})
        size = len(encode(message, max_bytes=10 * limit))
        # measured exactly: envelope + entries, one comma fewer than entries
        assert size == base + sum(entry_size(row) for row in part) - 1
        assert size <= limit
        if number < len(parts) - 1:  # full: the next entry would not have fitted
            nxt = parts[number + 1][0]
            assert base + sum(entry_size(row) for row in part) + entry_size(nxt) > limit
