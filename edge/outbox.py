"""The durable outbox: every data message is in SQLite before it is sent.

One table holds the messages until the cloud has committed them (its `committed` mark for
the stream reaches their seq: a broker's PUBACK is not enough), one the last sequence number
of each stream, one the counters that must survive a restart (drops per reason, the
`bd_seq` connect counter). A message's sequence number is assigned in the same transaction that
stores it, so sequence numbers are gap-free and survive restarts: a number is never handed
out for a message that was not stored.

Bounds, stated and counted:
- size: when the payloads would exceed `max_bytes`, the lowest `Priority` goes first,
  oldest first (SIGHTING, then EVENT, then SNAPSHOT, CONTROL last); within a priority the
  messages not sent yet go before the ones sent since the start (`sent_through`), which
  may already be at the cloud: a drop then is a seq the cloud will not have, so the drop
  count matches the seqs missing there; drop reason `overflow.<priority>`;
- age: messages older than `max_age_s` are dropped; reason `expired.<priority>`.

Durability (see docs/edge.md): WAL with synchronous=NORMAL survives a crash or SIGKILL of
the process; a power cut can lose the last commits (about a second). synchronous=FULL
fsyncs every commit and survives a power cut, at a throughput cost.

All methods are synchronous and short; a lock makes the object usable from paho's network
thread too (for the connect counter, which must be bumped right before each CONNECT).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.drivers.base import Priority

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_priority ON messages (priority, id);
CREATE INDEX IF NOT EXISTS messages_by_stream ON messages (stream, seq);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

CACHE_KIB = 256
"""SQLite's page cache for the outbox (its default is 2,000 KiB). An append-and-delete queue
reads back only its newest pages, which the cache keeps anyway; at 256 KiB the throughput was
the same (20,000 appends, read back, confirmed: 13,600 msg/s median of 5 against 11,700 at
the default, same run) and a store's edge keeps about 1.7 MB less RSS once the outbox holds
a few MB (bench/storefootprint)."""
BD_SEQ = "bd_seq"
_DROP_PREFIX = "drop:"


@dataclass(frozen=True, slots=True)
class Pending:
    """A stored message waiting to be sent, or for the cloud to commit it."""

    id: int
    stream: str
    seq: int
    topic: str
    payload: bytes
    created: float


@dataclass(frozen=True, slots=True)
class Holding:
    """What the outbox holds of one stream: from `kept_from` up, except the `dropped` runs."""

    kept_from: int
    dropped: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    bytes: int
    capacity_bytes: int
    oldest_age_s: float | None
    dropped: dict[str, int]


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        synchronous: Literal["normal", "full"] = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages")
        self._depth, self._bytes = (int(v) for v in row.fetchone())
        self.sent_through = 0  # the forwarder's highest message id sent since the start

    # ------------------------------------------------------------------ writing

    def append(
        self, stream: str, priority: Priority, build: Callable[[int], tuple[str, bytes]]
    ) -> tuple[int, bytes]:
        """Assign the stream's next seq, build the message with it, store it; one transaction.

        `build(seq)` returns (topic, payload). Returns (seq, payload). When the outbox is
        full, lower-priority and older messages are dropped, possibly this one.
        """
        with self._lock, self._transaction():
            seq = self._next_seq(stream)
            topic, payload = build(seq)
            self._db.execute(
                "INSERT INTO messages (stream, seq, priority, topic, payload, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (stream, seq, int(priority), topic, payload, self._clock()),
            )
            self._depth += 1
            self._bytes += len(payload)
            if self._bytes > self.max_bytes:
                self._make_room()
            return seq, payload

    def next_seq(self, stream: str) -> int:
        """A sequence number for a message that is not stored (lifecycle messages)."""
        with self._lock, self._transaction():
            return self._next_seq(stream)

    def next_bd_seq(self) -> int:
        """Bump and persist the connect counter; called right before every CONNECT."""
        with self._lock, self._transaction():
            value = self._counter(BD_SEQ) + 1
            self._set_counter(BD_SEQ, value)
            return value

    def bd_seq(self) -> int:
        with self._lock:
            return self._counter(BD_SEQ)

    def confirm(self, marks: Mapping[str, int]) -> int:
        """The cloud has committed every seq up to `marks[stream]`: forget those messages,
        all streams in one transaction. Returns how many were deleted."""
        deleted = 0
        with self._lock, self._transaction():
            for stream, seq in marks.items():
                rows = self._db.execute(
                    "DELETE FROM messages WHERE stream = ? AND seq <= ? RETURNING LENGTH(payload)",
                    (stream, seq),
                ).fetchall()
                deleted += len(rows)
                self._depth -= len(rows)
                self._bytes -= sum(int(r[0]) for r in rows)
        return deleted

    def drop(self, message_id: int, reason: str) -> None:
        with self._lock, self._transaction():
            rows = self._db.execute(
                "SELECT priority FROM messages WHERE id = ?", (message_id,)
            ).fetchall()
            if rows:
                self._delete_ids([message_id])
                self._count_drop(f"{reason}.{Priority(rows[0][0]).name.lower()}", 1)

    def expire(self) -> int:
        """Drop messages older than max_age_s; returns how many."""
        cutoff = self._clock() - self.max_age_s
        with self._lock, self._transaction():
            rows = self._db.execute(
                "SELECT priority, COUNT(*), SUM(LENGTH(payload)) FROM messages"
                " WHERE created < ? GROUP BY priority",
                (cutoff,),
            ).fetchall()
            if not rows:
                return 0
            self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
            total = 0
            for priority, count, size in rows:
                self._count_drop(f"expired.{Priority(priority).name.lower()}", count)
                self._depth -= count
                self._bytes -= size
                total += count
            return int(total)

    # ------------------------------------------------------------------ reading

    def pending(self, after_id: int, limit: int) -> list[Pending]:
        """Stored messages in the order they were stored (so in seq order per stream)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, stream, seq, topic, payload, created FROM messages"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Pending(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def holdings(self, max_holes: int = 64) -> dict[str, Holding]:
        """Per stream: the lowest seq held and the runs of seqs missing (dropped) between it
        and the stream's position, the newest `max_holes` of them. With more holes than
        that, `kept_from` moves up past the older ones: what is held below them is given up
        to the cloud (which may already have it), rather than announced."""
        with self._lock:
            rows = self._db.execute(
                "SELECT stream, seq, previous FROM ("
                "  SELECT stream, seq, LAG(seq) OVER (PARTITION BY stream ORDER BY seq)"
                "  AS previous FROM messages"
                ") WHERE previous IS NULL OR seq > previous + 1 ORDER BY stream, seq"
            ).fetchall()
            tops = dict(self._db.execute("SELECT stream, MAX(seq) FROM messages GROUP BY stream"))
            positions = dict(self._db.execute("SELECT stream, seq FROM streams"))
        holdings: dict[str, Holding] = {}
        for stream, seq, previous in rows:
            if previous is None:
                holdings[stream] = Holding(seq, [])
            else:
                holdings[stream].dropped.append((previous + 1, seq - 1))
        for stream, holding in holdings.items():
            if tops[stream] < positions[stream]:
                holding.dropped.append((tops[stream] + 1, positions[stream]))
            if len(holding.dropped) > max_holes:
                oldest_kept = holding.dropped[-max_holes - 1][1] + 1
                holdings[stream] = Holding(oldest_kept, holding.dropped[-max_holes:])
        return holdings

    def oldest_id(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(id) FROM messages").fetchone()
        return None if row[0] is None else int(row[0])

    def stream_positions(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT stream, seq FROM streams ORDER BY stream").fetchall()
        return {stream: seq for stream, seq in rows}

    def dropped(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM counters WHERE name LIKE ? ORDER BY name",
                (_DROP_PREFIX + "%",),
            ).fetchall()
        return {name.removeprefix(_DROP_PREFIX): value for name, value in rows}

    def count_drop(self, reason: str, count: int = 1) -> None:
        """Count a drop that happened outside the table (e.g. a malformed command)."""
        with self._lock, self._transaction():
            self._count_drop(reason, count)

    @property
    def depth(self) -> int:
        return self._depth

    def stats(self) -> OutboxStats:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM messages").fetchone()[0]
        return OutboxStats(
            depth=self._depth,
            bytes=self._bytes,
            capacity_bytes=self.max_bytes,
            oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            dropped=self.dropped(),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ internals

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _next_seq(self, stream: str) -> int:
        row = self._db.execute(
            "INSERT INTO streams (stream, seq) VALUES (?, 1)"
            " ON CONFLICT (stream) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (stream,),
        ).fetchone()
        return int(row[0])

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def _set_counter(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def _count_drop(self, reason: str, count: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (_DROP_PREFIX + reason, count),
        )

    def _delete_ids(self, ids: Iterable[int]) -> None:
        for message_id in ids:
            row = self._db.execute(
                "DELETE FROM messages WHERE id = ? RETURNING LENGTH(payload)", (message_id,)
            ).fetchone()
            if row is not None:
                self._depth -= 1
                self._bytes -= int(row[0])

    def _make_room(self) -> None:
        # Lowest priority first, not sent before sent, oldest first, until the payloads fit.
        cursor = self._db.execute(
            "SELECT id, priority, LENGTH(payload) FROM messages ORDER BY priority, id <= ?, id",
            (self.sent_through,),
        )
        victims: list[tuple[int, int]] = []
        excess = self._bytes - self.max_bytes
        for message_id, priority, size in cursor:
            if excess <= 0:
                break
            victims.append((message_id, priority))
            excess -= size
        cursor.close()
        for message_id, priority in victims:
            self._delete_ids([message_id])
            self._count_drop(f"overflow.{Priority(priority).name.lower()}", 1)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
