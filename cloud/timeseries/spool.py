"""A durable, byte-bounded local queue of line-protocol batches in SQLite (WAL).

The ingestor appends a message batch's lines *before* it commits its state and acks MQTT;
`append` returns only after the lines are committed to disk. The pump reads the oldest
batches, writes them to the sink and marks them sent (`mark_sent`) only after the sink
accepted them.

Policy when full: never drop. `append` raises `SpoolFull`; the ingestor stops acking (MQTT
redelivers later) and `append_wait` lets it wait for the pump to make room instead. One
call's lines are committed atomically (all or none), split into rows of at most
`max_row_lines` so the pump's memory is bounded by its batch size, not by a call's size.

Acknowledged is not always durable: VictoriaMetrics answers a write before its buffers
reach disk, and a SIGKILL loses what it held (seconds of points). So `mark_sent`
keeps written rows as *kept* for a replay window instead of deleting them: rows acknowledged
within `keep_sent_s` of the newest acknowledgement, at most `keep_sent_bytes` (oldest go
first). The window is anchored at the newest acknowledgement, not the clock, so an outage
of any length does not age out the rows the sink may have lost just before it went down.
`kept()` hands them back to the pump to write again; points are idempotent. Kept rows do not
count against `capacity_bytes`: the file holds at most `capacity_bytes + keep_sent_bytes`
of lines.

The pump acknowledges the oldest pending rows first, so the kept rows are always a prefix
of the ids: one high-water mark (the `acked` table, one small row per acknowledged write
with its time) separates kept from pending, and marking a write sent never rewrites its
payload.

Thread safety: one connection guarded by a lock, so the async wrappers may run the blocking
SQLite calls in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud.timeseries.lineprotocol import LineProtocolError, Point, encode

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_BYTES = 512 * 1024 * 1024
DEFAULT_KEEP_SENT_S = 60.0
DEFAULT_KEEP_SENT_BYTES = 64 * 1024 * 1024
_MAX_ID = 2**63 - 1
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

    rows: int  # pending: not yet acknowledged by the sink
    lines: int
    bytes: int
    capacity_bytes: int
    oldest_age_s: float | None  # of the oldest pending line
    dead_letters: int
    kept_rows: int  # acknowledged, kept for a replay after a sink crash
    kept_lines: int
    kept_bytes: int
    kept_window_s: float | None  # how far back the kept rows reach, by acknowledgement time


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
        keep_sent_s: float = DEFAULT_KEEP_SENT_S,
        keep_sent_bytes: int = DEFAULT_KEEP_SENT_BYTES,
    ) -> None:
        if capacity_bytes <= 0 or max_row_lines <= 0:
            raise ValueError("capacity_bytes and max_row_lines must be positive")
        if keep_sent_s < 0 or keep_sent_bytes < 0:
            raise ValueError("keep_sent_s and keep_sent_bytes must not be negative")
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be FULL (survives power loss) or NORMAL")
        self.path = self._database_path(Path(path))
        self.capacity_bytes = capacity_bytes
        self.max_row_lines = max_row_lines
        self.keep_sent_s = keep_sent_s
        self.keep_sent_bytes = keep_sent_bytes
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
            -- Rows up to last_id (after the previous acked row) were acknowledged at `at`.
            -- The greatest last_id is the high-water mark: rows above it are pending.
            CREATE TABLE IF NOT EXISTS acked (
                last_id INTEGER PRIMARY KEY,
                at REAL NOT NULL
            );
            CREATE TABLE IF NOT EXISTS dead_letter (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created REAL NOT NULL,
                reason TEXT NOT NULL,
                payload TEXT NOT NULL
            );
            """
        )
        self._acked_through = int(
            self._db.execute("SELECT coalesce(max(last_id), 0) FROM acked").fetchone()[0]
        )
        self._rows, self._lines, self._bytes = self._totals_locked(self._acked_through + 1, _MAX_ID)
        self._kept_rows, self._kept_lines, self._kept_bytes = self._totals_locked(
            0, self._acked_through
        )

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
        """The oldest pending rows, up to `max_lines` lines (always at least one row), or None."""
        with self._lock:
            return self._read_locked(max_lines, self._acked_through, _MAX_ID)

    def kept(self, max_lines: int, after_id: int = 0) -> SpooledBatch | None:
        """Kept (acknowledged) rows after `after_id`, oldest first, up to `max_lines` lines:
        what to write again after the sink restarted. None when there are no more."""
        with self._lock:
            return self._read_locked(max_lines, after_id, self._acked_through)

    def _read_locked(self, max_lines: int, after_id: int, through_id: int) -> SpooledBatch | None:
        cursor = self._db.execute(
            "SELECT id, nlines, nbytes, payload FROM batch WHERE id > ? AND id <= ? "
            "ORDER BY id LIMIT ?",
            (after_id, through_id, max(1, max_lines)),
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
        """Forget the pending rows of `batch` without keeping them for a replay."""
        with self._lock:
            self._delete_locked(batch)

    def mark_sent(self, batch: SpooledBatch, *, now: float | None = None) -> None:
        """The sink acknowledged `batch`: keep its rows for the replay window (or forget them
        when the window is 0), then forget kept rows the window no longer covers."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._mark_sent_locked(batch.first_id, batch.last_id, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _mark_sent_locked(self, first_id: int, last_id: int, now: float) -> None:
        if last_id <= self._acked_through:
            return  # marked already
        skipped = self._db.execute(
            "SELECT min(id) FROM batch WHERE id > ? AND id < ?", (self._acked_through, first_id)
        ).fetchone()[0]
        if skipped is not None:  # only a prefix can be kept: see the module docstring
            raise ValueError(f"rows {first_id}..{last_id} are not the oldest pending ones")
        rows, lines, nbytes = self._totals_locked(self._acked_through + 1, last_id)
        self._db.execute("INSERT INTO acked (last_id, at) VALUES (?, ?)", (last_id, now))
        self._acked_through = last_id
        self._rows -= rows
        self._lines -= lines
        self._bytes -= nbytes
        self._kept_rows += rows
        self._kept_lines += lines
        self._kept_bytes += nbytes
        self._trim_kept_locked(now)

    def _trim_kept_locked(self, now: float) -> None:
        """Drop kept rows acknowledged more than `keep_sent_s` before `now` (the newest
        acknowledgement), then the oldest ones until the rest fit `keep_sent_bytes`."""
        if self.keep_sent_s <= 0 or self.keep_sent_bytes <= 0:
            self._drop_kept_through_locked(self._acked_through)
            return
        too_old = self._db.execute(
            "SELECT max(last_id) FROM acked WHERE at < ?", (now - self.keep_sent_s,)
        ).fetchone()[0]
        if too_old is not None:
            self._drop_kept_through_locked(int(too_old))
        if self._kept_bytes <= self.keep_sent_bytes:
            return
        excess, last = self._kept_bytes - self.keep_sent_bytes, None
        cursor = self._db.execute(
            "SELECT id, nbytes FROM batch WHERE id <= ? ORDER BY id", (self._acked_through,)
        )
        for row_id, size in cursor:
            excess, last = excess - size, row_id
            if excess <= 0:
                break
        cursor.close()
        if last is not None:
            self._drop_kept_through_locked(int(last))

    def _drop_kept_through_locked(self, last_id: int) -> None:
        rows, lines, nbytes = self._totals_locked(0, last_id)
        self._db.execute("DELETE FROM batch WHERE id <= ?", (last_id,))
        # Those acked rows cover deleted rows only. Without them a reopened spool finds a lower
        # high-water mark, but no row between the two: kept and pending stay apart.
        self._db.execute("DELETE FROM acked WHERE last_id <= ?", (last_id,))
        self._kept_rows -= rows
        self._kept_lines -= lines
        self._kept_bytes -= nbytes

    def _totals_locked(self, first_id: int, last_id: int) -> tuple[int, int, int]:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(nlines), 0), coalesce(sum(nbytes), 0) "
            "FROM batch WHERE id BETWEEN ? AND ?",
            (first_id, last_id),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def _delete_locked(self, batch: SpooledBatch) -> None:
        first_id = max(batch.first_id, self._acked_through + 1)  # pending rows only
        rows, lines, nbytes = self._totals_locked(first_id, batch.last_id)
        self._db.execute("DELETE FROM batch WHERE id BETWEEN ? AND ?", (first_id, batch.last_id))
        self._rows -= rows
        self._lines -= lines
        self._bytes -= nbytes

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
        """`batch` was written but for the `rejected` lines: move those lines to
        `dead_letter` with the sink's reason and mark the rest sent, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                self._db.executemany(
                    "INSERT INTO dead_letter (created, reason, payload) VALUES (?, ?, ?)",
                    [(now, reason[:2000], line) for line, reason in rejected],
                )
                self._remove_lines_locked(batch, [line for line, _ in rejected])
                self._mark_sent_locked(batch.first_id, batch.last_id, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _remove_lines_locked(self, batch: SpooledBatch, lines: list[str]) -> None:
        """Take `lines` (each once) out of the pending rows of `batch`, so a replay does
        not send refused lines again."""
        to_remove = Counter(lines)
        rows = self._db.execute(
            "SELECT id, payload FROM batch WHERE id BETWEEN ? AND ? ORDER BY id",
            (max(batch.first_id, self._acked_through + 1), batch.last_id),
        ).fetchall()
        for row_id, payload in rows:
            kept: list[str] = []
            for line in payload.split("\n"):
                if to_remove[line] > 0:
                    to_remove[line] -= 1
                else:
                    kept.append(line)
            if len(kept) == payload.count("\n") + 1:
                continue
            old_lines, old_bytes = payload.count("\n") + 1, len(payload.encode())
            if kept:
                new = "\n".join(kept)
                self._db.execute(
                    "UPDATE batch SET payload = ?, nlines = ?, nbytes = ? WHERE id = ?",
                    (new, len(kept), len(new.encode()), row_id),
                )
                self._lines -= old_lines - len(kept)
                self._bytes -= old_bytes - len(new.encode())
            else:
                self._db.execute("DELETE FROM batch WHERE id = ?", (row_id,))
                self._rows -= 1
                self._lines -= old_lines
                self._bytes -= old_bytes

    def dead_letters(self) -> list[tuple[str, str]]:
        """(line, reason) of every line a sink refused for good, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT payload, reason FROM dead_letter ORDER BY id")
            return [(str(line), str(reason)) for line, reason in rows.fetchall()]

    # ----------------------------------------------------------------------- stats

    def stats(self) -> SpoolStats:
        with self._lock:
            oldest = self._oldest_pending_locked()
            row = self._db.execute(
                "SELECT at FROM acked WHERE last_id >= "
                "(SELECT min(id) FROM batch WHERE id <= ?) ORDER BY last_id LIMIT 1",
                (self._acked_through,),
            ).fetchone()
            kept_since = None if row is None else float(row[0])
            dead = self._db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
            now = time.time()
            return SpoolStats(
                rows=self._rows,
                lines=self._lines,
                bytes=self._bytes,
                capacity_bytes=self.capacity_bytes,
                oldest_age_s=None if oldest is None else max(0.0, now - oldest),
                dead_letters=int(dead),
                kept_rows=self._kept_rows,
                kept_lines=self._kept_lines,
                kept_bytes=self._kept_bytes,
                kept_window_s=None if kept_since is None else max(0.0, now - kept_since),
            )

    @property
    def lines(self) -> int:
        """Pending lines (not yet acknowledged by the sink)."""
        return self._lines

    @property
    def pending_bytes(self) -> int:
        """Line bytes of the pending lines (what counts against `capacity_bytes`)."""
        return self._bytes

    @property
    def kept_lines(self) -> int:
        """Acknowledged lines kept for a replay."""
        return self._kept_lines

    def oldest_age_s(self) -> float | None:
        """Age of the oldest pending line; None when nothing is pending."""
        with self._lock:
            oldest = self._oldest_pending_locked()
        return None if oldest is None else max(0.0, time.time() - oldest)

    def _oldest_pending_locked(self) -> float | None:
        row = self._db.execute(
            "SELECT created FROM batch WHERE id > ? ORDER BY id LIMIT 1", (self._acked_through,)
        ).fetchone()
        return None if row is None else float(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
