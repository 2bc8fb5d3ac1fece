"""What a locker bank must not forget across a restart: holds, pickup and drop-off grants,
used codes.

A small SQLite file per bank (by default beside the outbox, `locker-<bank>.sqlite3`).
Every change is committed before the driver acknowledges the command that caused it, and
a redeemed code is crossed out before its door is unlocked, so a restart (or a power cut:
`synchronous=FULL`) neither loses a reservation nor revives a spent code. Rows for
compartments the config no longer has are kept but ignored (with a warning at start).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from protocols.messages import CompartmentState
from protocols.pickup import Grant

_SCHEMA = """
CREATE TABLE IF NOT EXISTS compartments (
    bank TEXT NOT NULL,
    compartment TEXT NOT NULL,
    state TEXT NOT NULL,
    order_ref TEXT,
    hold_until TEXT,
    before_service TEXT,
    forced_open INTEGER NOT NULL,
    grant_seq INTEGER,
    grant_expiry INTEGER,
    PRIMARY KEY (bank, compartment)
);
CREATE TABLE IF NOT EXISTS used_grants (
    bank TEXT NOT NULL,
    compartment TEXT NOT NULL,
    order_seq INTEGER NOT NULL,
    expiry INTEGER NOT NULL,
    PRIMARY KEY (bank, compartment, order_seq)
);
-- drop-off (return) grants already used: a table of their own, since a drop-off grant's
-- number (the cloud's return id) may equal a pickup grant's (an order number)
CREATE TABLE IF NOT EXISTS used_dropoffs (
    bank TEXT NOT NULL,
    compartment TEXT NOT NULL,
    order_seq INTEGER NOT NULL,
    expiry INTEGER NOT NULL,
    PRIMARY KEY (bank, compartment, order_seq)
);
"""
_USED_GRANTS = (
    "SELECT compartment, order_seq, expiry FROM used_grants WHERE bank = ? AND expiry > ?"
)
_USED_DROPOFFS = (
    "SELECT compartment, order_seq, expiry FROM used_dropoffs WHERE bank = ? AND expiry > ?"
)


@dataclass(frozen=True, slots=True)
class SavedCompartment:
    """The part of a compartment that only commands created (the sensors give the rest)."""

    state: CompartmentState
    order_ref: str | None = None
    hold_until: datetime | None = None
    before_service: CompartmentState | None = None
    forced_open: bool = False
    grant: Grant | None = None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class ReservationStore:
    def __init__(self, path: Path, bank: str) -> None:
        self.path = path
        self.bank = bank
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"state_path: {path} is not a locker state database: {exc}") from None

    def load(self) -> dict[str, SavedCompartment]:
        rows = self._db.execute(
            "SELECT compartment, state, order_ref, hold_until, before_service, forced_open,"
            " grant_seq, grant_expiry FROM compartments WHERE bank = ?",
            (self.bank,),
        ).fetchall()
        saved: dict[str, SavedCompartment] = {}
        for cid, state, order_ref, hold, before, forced, seq, expiry in rows:
            grant = (
                Grant(self.bank, cid, seq, datetime.fromtimestamp(expiry, UTC))
                if seq is not None and expiry is not None
                else None
            )
            saved[cid] = SavedCompartment(
                state=CompartmentState(state),
                order_ref=order_ref,
                hold_until=_time(hold),
                before_service=CompartmentState(before) if before else None,
                forced_open=bool(forced),
                grant=grant,
            )
        return saved

    def used_grants(self, now: datetime, *, dropoffs: bool = False) -> list[Grant]:
        """Used pickup grants (or, with `dropoffs`, used drop-off grants) not yet expired."""
        query = _USED_DROPOFFS if dropoffs else _USED_GRANTS
        rows = self._db.execute(query, (self.bank, int(now.timestamp()))).fetchall()
        return [Grant(self.bank, c, seq, datetime.fromtimestamp(e, UTC)) for c, seq, e in rows]

    def save(
        self,
        changed: dict[str, SavedCompartment],
        used: list[Grant] | None = None,
        now: datetime | None = None,
        used_dropoffs: list[Grant] | None = None,
    ) -> None:
        """Write the changed compartments (and newly used grants) in one transaction."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO compartments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        self.bank,
                        cid,
                        s.state.value,
                        s.order_ref,
                        s.hold_until.isoformat() if s.hold_until else None,
                        s.before_service.value if s.before_service else None,
                        int(s.forced_open),
                        s.grant.order_seq if s.grant else None,
                        int(s.grant.expiry.timestamp()) if s.grant else None,
                    )
                    for cid, s in changed.items()
                ],
            )
            if used:
                self._db.executemany(
                    "INSERT OR REPLACE INTO used_grants VALUES (?, ?, ?, ?)",
                    [(g.bank, g.compartment, g.order_seq, int(g.expiry.timestamp())) for g in used],
                )
            if used_dropoffs:
                self._db.executemany(
                    "INSERT OR REPLACE INTO used_dropoffs VALUES (?, ?, ?, ?)",
                    [
                        (g.bank, g.compartment, g.order_seq, int(g.expiry.timestamp()))
                        for g in used_dropoffs
                    ],
                )
            if now is not None:
                expired = (int(now.timestamp()),)
                self._db.execute("DELETE FROM used_grants WHERE expiry <= ?", expired)
                self._db.execute("DELETE FROM used_dropoffs WHERE expiry <= ?", expired)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
