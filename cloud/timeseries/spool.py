"""A durable, byte-bounded local queue of line-protocol batches in SQLite (WAL).

The ingestor appends a message batch's lines *before* it commits its state and acks MQTT;
`append` returns only after the lines are committed to disk. The pump reads the oldest
batches, writes them to the sink and deletes them only after the sink accepted them.

Policy when full: never drop. `append` raises `SpoolFull`; the ingestor stops acking (MQTT
redelivers later) and `append_wait` lets it wait for the pump to make room instead. One
call's lines are committed atomically (all or none), split into rows of at most
`max_row_lines` so the pump's memory is bounded by its batch size, not by a call's size.

Thread safety: one connection guarded by a lock, so the async wrappers may run the blocking
SQLite calls in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud.timeseries.lineprotocol import LineProtocolError, Point, encode

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_BYTES = 512 * 1024 * 1024
SPOOL_FILE = "timeseries-spool.db"


class SpoolFull(Exception):  # noqa: N818 -- reads as a state, like queue.Full
    """The spool has no room for these lines: stop acking upstream until the pump drains it."""

    def __init__(self, needed: int, used: int, capacity: int) -> None:
        super().__init__(
            f"time-series spool full: {needed} bytes do not fit "
            f"({used} of {capacity} bytes used); the sink is down or slower than ingest"
        )
        self.needed, self.used, self.capacity = needed, used, capacity


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """`bytes` and `capacity_bytes` count line-protocol bytes; the SQLite file adds page and
    WAL overhead on top (freed pages are reused, so the file stops growing near capacity)."""

    rows: int
    lines: int
    bytes: int
    capacity_bytes: int
    oldest_age_s: float | None
    dead_letters: int


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """Rows read for one sink write; `last_id` is what to delete after the write succeeded."""

    first_id: int
    last_id: int
    lines: list[str]
    nbytes: int


class Spool:
    def __init__(
        self,
        path: Path | str,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        max_row_lines: int = 5_000,
        synchronous: str = "FULL",
    ) -> None:
        if capacity_bytes <= 0 or max_row_lines <= 0:
            raise ValueError("capacity_bytes and max_row_lines must be positive")
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be FULL (survives power loss) or NORMAL")
        self.path = self._database_path(Path(path))
        self.capacity_bytes = capacity_bytes
        self.max_row_lines = max_row_lines
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, which spool-first-then-ack relies on.
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS batch (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created REAL NOT NULL,
                nlines INTEGER NOT NULL,
                nbytes INTEGER NOT NULL,
                payload TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS dead_letter (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created REAL NOT NULL,
                reason TEXT NOT NULL,
                payload TEXT NOT NULL
            );
            """
        )
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(nlines), 0), coalesce(sum(nbytes), 0) FROM batch"
        ).fetchone()
        self._rows, self._lines, self._bytes = int(row[0]), int(row[1]), int(row[2])

    @staticmethod
    def _database_path(path: Path) -> Path:
        """A path with a suffix (`spool.db`) is the database file; one without (an existing
        directory, or a setting like `spool_dir: storegate-spool`) is a directory to hold it."""
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / SPOOL_FILE
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------------- writing

    def append(self, items: Sequence[str | Point]) -> None:
        """Commit line-protocol lines (or `Point`s, encoded here) durably, or raise
        `SpoolFull` having stored none of them.

        A `Point` that cannot be encoded is a schema bug, not a reason to block the ingestor
        forever on redelivery: it goes to `dead_letter` with the reason, the rest is stored.
        """
        lines, unencodable = self._lines_of(items)
        if unencodable:
            log.error(
                "time-series: %d points cannot be encoded: %s", len(unencodable), unencodable[0][1]
            )
            self._dead_letter_lines(unencodable)
        if not lines:
            return
        chunks = [
            lines[i : i + self.max_row_lines] for i in range(0, len(lines), self.max_row_lines)
        ]
        payloads = ["\n".join(chunk) for chunk in chunks]
        sizes = [len(p.encode()) for p in payloads]
        needed = sum(sizes)
        if needed > self.capacity_bytes:
            raise ValueError(
                f"{needed} bytes can never fit a spool of {self.capacity_bytes} bytes; "
                "append smaller batches"
            )
        now = time.time()
        with self._lock:
            if self._bytes + needed > self.capacity_bytes:
                raise SpoolFull(needed, self._bytes, self.capacity_bytes)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO batch (created, nlines, nbytes, payload) VALUES (?, ?, ?, ?)",
                    [(now, len(c), s, p) for c, s, p in zip(chunks, sizes, payloads, strict=True)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows += len(chunks)
            self._lines += len(lines)
            self._bytes += needed

    async def append_async(self, lines: Sequence[str | Point]) -> None:
        """`append` in a worker thread (the fsync must not block the event loop)."""
        await asyncio.to_thread(self.append, lines)

    async def append_wait(
        self,
        items: Sequence[str | Point],
        *,
        wait_s: float | None = None,
        poll_s: float = 0.05,
    ) -> None:
        """Append, waiting while the spool is full; raises `SpoolFull` after `wait_s`."""
        lines, unencodable = self._lines_of(items)
        if unencodable:
            self._dead_letter_lines(unencodable)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                await self.append_async(lines)
                return
            except SpoolFull:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(poll_s)

    # ----------------------------------------------------------------------- reading

    def peek(self, max_lines: int) -> SpooledBatch | None:
        """The oldest rows, up to `max_lines` lines (always at least one row), or None."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT id, nlines, nbytes, payload FROM batch ORDER BY id LIMIT ?",
                (max(1, max_lines),),
            )
            first_id = last_id = -1
            lines: list[str] = []
            nbytes = 0
            for row_id, nlines, size, payload in cursor:
                if lines and len(lines) + nlines > max_lines:
                    break
                if first_id < 0:
                    first_id = row_id
                last_id = row_id
                lines.extend(payload.split("\n"))
                nbytes += size
            cursor.close()
        if first_id < 0:
            return None
        return SpooledBatch(first_id, last_id, lines, nbytes)

    def delete_through(self, batch: SpooledBatch) -> None:
        """Forget rows up to `batch.last_id`: call only after the sink accepted them."""
        with self._lock:
            self._delete_locked(batch)

    def _delete_locked(self, batch: SpooledBatch) -> None:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(nlines), 0), coalesce(sum(nbytes), 0) "
            "FROM batch WHERE id BETWEEN ? AND ?",
            (batch.first_id, batch.last_id),
        ).fetchone()
        self._db.execute(
            "DELETE FROM batch WHERE id BETWEEN ? AND ?", (batch.first_id, batch.last_id)
        )
        self._rows -= int(row[0])
        self._lines -= int(row[1])
        self._bytes -= int(row[2])

    @staticmethod
    def _lines_of(items: Sequence[str | Point]) -> tuple[list[str], list[tuple[str, str]]]:
        lines: list[str] = []
        unencodable: list[tuple[str, str]] = []
        for item in items:
            if isinstance(item, str):
                lines.append(item)
                continue
            try:
                lines.append(encode(item))
            except LineProtocolError as exc:
                unencodable.append((repr(item)[:2000], str(exc)))
        return lines, unencodable

    def _dead_letter_lines(self, rejected: list[tuple[str, str]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO dead_letter (created, reason, payload) VALUES (?, ?, ?)",
                [(time.time(), reason[:2000], line) for line, reason in rejected],
            )

    def dead_letter(self, batch: SpooledBatch, rejected: list[tuple[str, str]]) -> None:
        """Forget `batch` (written, but for the `rejected` lines), keeping those lines in
        `dead_letter` with the sink's reason, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                self._db.executemany(
                    "INSERT INTO dead_letter (created, reason, payload) VALUES (?, ?, ?)",
                    [(now, reason[:2000], line) for line, reason in rejected],
                )
                self._delete_locked(batch)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def dead_letters(self) -> list[tuple[str, str]]:
        """(line, reason) of every line a sink refused for good, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT payload, reason FROM dead_letter ORDER BY id")
            return [(str(line), str(reason)) for line, reason in rows.fetchall()]

    # ----------------------------------------------------------------------- stats

    def stats(self) -> SpoolStats:
        with self._lock:
            row = self._db.execute("SELECT created FROM batch ORDER BY id LIMIT 1").fetchone()
            oldest = None if row is None else row[0]
            dead = self._db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
            return SpoolStats(
                rows=self._rows,
                lines=self._lines,
                bytes=self._bytes,
                capacity_bytes=self.capacity_bytes,
                oldest_age_s=None if oldest is None else max(0.0, time.time() - oldest),
                dead_letters=int(dead),
            )

    @property
    def lines(self) -> int:
        return self._lines

    def oldest_age_s(self) -> float | None:
        with self._lock:
            oldest = self._db.execute("SELECT created FROM batch ORDER BY id LIMIT 1").fetchone()
        return None if oldest is None else max(0.0, time.time() - oldest[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
