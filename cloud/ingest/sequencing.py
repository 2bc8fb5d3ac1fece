"""Per-stream dedup and gap detection: a high-water mark plus a bounded window of marks.

`hw` is the highest seq such that every seq <= hw has been ingested (or was given up on).
It is also what the cloud confirms to the edge (`committed`), which deletes its outbox up to
it: so `hw` never moves past a seq the edge may still send, except when the window
overflows. A seq above `hw + 1` arrived after a gap: it is applied and remembered as a
*mark* so a redelivery of it is still recognised. Marks fold into `hw` when the gap fills
(the edge resends what the cloud has not confirmed). The window is bounded: past `window`
marks the gap is given up on and `hw` jumps to the lowest mark.

`birth_seq` is the stream position announced by the node's latest birth: the birth's
snapshot already reflects every event up to it, so those events are history only. A seq
that fills a gap below a mark is history only too: a later event of the stream has already
been applied to live state, which must not go back to an older value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class StreamPosition:
    hw: int | None = None
    birth_seq: int | None = None
    marks: set[int] = field(default_factory=set)
    # Runs of seqs (first, last) above hw the node's latest birth said it dropped: they
    # will never come, so hw steps over them. Ascending. Kept in memory only: after a
    # restart of the cloud the window's give-up covers them.
    skips: list[tuple[int, int]] = field(default_factory=list)

    def copy(self) -> StreamPosition:
        return StreamPosition(self.hw, self.birth_seq, set(self.marks), list(self.skips))


@dataclass(frozen=True, slots=True)
class Admission:
    duplicate: bool
    live: bool = False  # apply to live state (False: history only, the snapshot has it)
    gap: tuple[int, int] | None = None  # missing seqs (first, last) that live state needs
    gave_up: bool = False  # the window overflowed and hw jumped past a gap


# The common outcomes, built once: `admit` runs for every message on the ingest hot path.
_DUPLICATE = Admission(duplicate=True)
_LIVE = Admission(duplicate=False, live=True)
_HISTORY_ONLY = Admission(duplicate=False, live=False)


def admit(
    position: StreamPosition, seq: int, *, window: int, newest_only: bool = False
) -> Admission:
    """Decide what to do with `seq` and advance `position` (mutated in place).

    `newest_only`: a stream whose lost messages are never resent (the edge's lifecycle
    messages: birth, health, death); a gap is not waited for, nor remembered in marks, and
    an older seq arriving late is stale.
    """
    hw = position.hw
    if hw is None and not newest_only:
        # A stream we know nothing of (no message, no birth yet) starts at 1: what came
        # before the first seq we see is still in the edge's outbox and will be resent (or
        # its birth says it is gone). Taking that first seq as the position would confirm
        # everything below it to the edge, which would then delete what we never had.
        # (Edges number from 1; a stream that does start at 0 is in order from -1.)
        hw = position.hw = 0 if seq > 0 else -1
    marks = position.marks
    if (hw is not None and seq <= hw) or seq in marks:
        return _DUPLICATE
    if position.skips and any(first <= seq <= last for first, last in position.skips):
        return _DUPLICATE  # dropped at the edge (and counted there): a late copy is stale
    birth_seq = position.birth_seq
    live = birth_seq is None or seq > birth_seq
    if hw is None or seq == hw + 1 or newest_only:
        # In order (or the first we see).
        position.hw = seq
        if marks or position.skips:
            if marks:
                live = live and seq > max(marks)
                position.marks = {m for m in marks if m > seq}
            _absorb(position)
        return _LIVE if live else _HISTORY_ONLY
    position.marks.add(seq)
    # A gap the birth's snapshot covers needs no resync: the edge still holds those
    # messages (the birth said from which seq) and resends them.
    gap = None if birth_seq is not None and seq - 1 <= birth_seq else (hw + 1, seq - 1)
    if len(position.marks) > window:
        position.hw = min(position.marks)
        position.marks.discard(position.hw)
        _absorb(position)
        return Admission(duplicate=False, live=live, gap=gap, gave_up=True)
    if gap is None:
        return _LIVE if live else _HISTORY_ONLY
    return Admission(duplicate=False, live=live, gap=gap)


def on_birth(
    position: StreamPosition,
    announced: int,
    kept_from: int | None = None,
    dropped: Sequence[tuple[int, int]] = (),
) -> None:
    """A birth says the node's last seq on this stream is `announced`, the lowest seq its
    outbox still holds is `kept_from` (`announced + 1` when it holds none), and which runs
    of seqs above that it dropped (`dropped`).

    Seqs the edge no longer holds will never come (it dropped them, and counted it): `hw`
    moves past them. Seqs it holds will be resent, so `hw` waits for them. Without
    `kept_from` (an edge older than commit marks) only a pending gap below the birth's
    position is closed.
    """
    if position.hw is not None and announced < position.hw:
        # The node's counter went backwards: it lost its state (new SD card, reset).
        # Start the stream over from the birth; the snapshot is the truth now.
        position.hw = announced
        position.marks.clear()
    position.birth_seq = announced
    position.skips = sorted((first, last) for first, last in dropped if first <= last)
    if position.hw is None:
        # The first we hear of the stream. An edge that says what it holds resends it from
        # `kept_from`; an older one resends nothing it had PUBACKed.
        position.hw = announced if kept_from is None else min(announced, kept_from - 1)
        _absorb(position)
        return
    if kept_from is None:
        if not position.marks or min(position.marks) - 1 > announced:
            return
        floor = min(position.marks) - 1
    else:
        floor = min(announced, kept_from - 1)
    if floor > position.hw:
        position.hw = floor
        if position.marks:
            position.marks = {m for m in position.marks if m > floor}
    _absorb(position)


def _absorb(position: StreamPosition) -> None:
    assert position.hw is not None
    marks, skips = position.marks, position.skips
    while True:
        if position.hw + 1 in marks:
            position.hw += 1
            marks.discard(position.hw)
        elif skips and skips[0][0] <= position.hw + 1:
            position.hw = max(position.hw, skips.pop(0)[1])
        else:
            return
