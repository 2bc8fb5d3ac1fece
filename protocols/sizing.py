"""Split lists that do not fit one payload into parts that each do, by encoded size.

A count of entries is no bound on bytes: 5,000 item events were ~700 KB, and a report of
more than ~1,830 of them made an `rfid.events` message the codec refused, over and over.
Here every entry is measured as the codec writes it (compact JSON, None left out) and the
parts are cut so that envelope + entries + margin stays under the payload limit, whatever
the number of tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel

from protocols.codec import MAX_PAYLOAD_BYTES, encode
from protocols.messages import INT64_MAX, Message

SIZE_MARGIN_BYTES = 1024
"""Room for what the measured envelope may not hold: a longer seq or part number, a
timestamp with microseconds, a snapshot id."""
MAX_ENTRIES = 5_000
"""The contract's max_length of the split lists (rfid items, counts, snapshot shelves)."""
WORST_CASE_SEQ = INT64_MAX
"""The seq to build a measuring envelope with: the longest one there is."""

T = TypeVar("T", bound=BaseModel)
U = TypeVar("U", bound=BaseModel)


def entry_size(entry: BaseModel) -> int:
    """Bytes `entry` takes inside a message's JSON list, its separating comma included."""
    return len(entry.model_dump_json(exclude_none=True).encode()) + 1


def envelope_size(envelope: Message) -> int:
    """Encoded bytes of a message whose split lists are empty."""
    return len(encode(envelope, max_bytes=INT64_MAX))


def plan_parts(sizes: Sequence[int], budget: int, max_entries: int = MAX_ENTRIES) -> list[range]:
    """Cut `sizes` into consecutive ranges, each summing to at most `budget` bytes and
    holding at most `max_entries` entries. Always at least one range (empty when there is
    nothing), so an empty snapshot still goes as one part."""
    if budget <= 0 or max_entries <= 0:
        raise ValueError(f"no room for any entry (budget {budget} bytes, {max_entries} entries)")
    parts: list[range] = []
    start = used = 0
    for index, size in enumerate(sizes):
        if size > budget:
            raise ValueError(f"entry {index} is {size} bytes, more than a whole part ({budget})")
        if index - start >= max_entries or used + size > budget:
            parts.append(range(start, index))
            start, used = index, 0
        used += size
    parts.append(range(start, len(sizes)))
    return parts


def split_by_size(
    entries: Sequence[T],
    envelope: Message,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    margin: int = SIZE_MARGIN_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> list[list[T]]:
    """`entries` in parts that each fit a message like `envelope` (built with the split
    list empty and the longest seq) under `max_bytes`, with `margin` bytes to spare."""
    budget = max_bytes - margin - envelope_size(envelope)
    sizes = [entry_size(entry) for entry in entries]
    return [
        list(entries[part.start : part.stop]) for part in plan_parts(sizes, budget, max_entries)
    ]


def split_pair_by_size(
    first: Sequence[T],
    second: Sequence[U],
    envelope: Message,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    margin: int = SIZE_MARGIN_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> list[tuple[list[T], list[U]]]:
    """Two lists of one message (rfid item events and count deltas) cut as one sequence,
    first then second; no part empty. Each list stays within `max_entries` per part."""
    if not first and not second:
        return []
    budget = max_bytes - margin - envelope_size(envelope)
    sizes = [entry_size(entry) for entry in first] + [entry_size(entry) for entry in second]
    cut = len(first)
    out: list[tuple[list[T], list[U]]] = []
    for part in plan_parts(sizes, budget, max_entries):
        out.append(
            (
                list(first[part.start : min(part.stop, cut)]),
                list(second[max(part.start, cut) - cut : max(part.stop, cut) - cut]),
            )
        )
    return out
