"""Shard leases in PostgreSQL: which replica consumes which shard, and the fencing token.

A row per shard: `holder`, `token`, `expires_at`. Every statement is one UPDATE (or one
upsert) that decides on the database's clock (`now()`), so replicas whose clocks disagree
still agree on who holds what:

- **acquire** takes one shard that is free or expired, raising its `token` by one;
- **renew** pushes `expires_at` of the shards a replica holds with the token it was given;
  a shard missing from the answer was taken over and is lost;
- **release** frees a shard (graceful hand-over: after its last batch was acked);
- **fence** runs inside every batch transaction of a shard: it updates the lease row only
  if holder and token are still ours, so a replica that was paused past its lease (and
  whose shard another replica took over, with a higher token) has its commit refused. The
  row lock it takes also orders that commit before any takeover that follows.

A replica also heartbeats in `ingest_replicas`; the replicas seen within one lease time are
the live ones, and each holds at most ceil(shards / live).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = MetaData()

# Created by cloud/migrations/versions/0007_shards.py.
shard_leases = Table(
    "ingest_shard_leases",
    metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("holder", String(128)),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("acquired_at", DateTime(timezone=True)),
    Column("last_commit_at", DateTime(timezone=True)),
)
replicas = Table(
    "ingest_replicas",
    metadata,
    Column("replica", String(128), primary_key=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# A replica that has not heartbeated for this long is forgotten (its row deleted).
FORGET_REPLICA_S = 3600


class FencedError(Exception):
    """The shard's lease is no longer ours: the batch must not commit, nothing is acked."""


@dataclass(frozen=True, slots=True)
class Lease:
    shard: int
    token: int


class LeaseTable:
    def __init__(self, engine: AsyncEngine, replica: str, *, shards: int, ttl_s: float) -> None:
        self.engine = engine
        self.replica = replica
        self.shards = shards
        self.ttl_s = ttl_s

    async def prepare(self) -> None:
        """One row per shard (idempotent: every replica runs it at start)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO ingest_shard_leases (shard, token)"
                    " SELECT k, 0 FROM generate_series(0, :last) AS k"
                    " ON CONFLICT (shard) DO NOTHING"
                ),
                {"last": self.shards - 1},
            )

    async def heartbeat(self) -> int:
        """Say this replica is alive; returns how many replicas are (this one included)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO ingest_replicas (replica, heartbeat_at) VALUES (:me, now())"
                    " ON CONFLICT (replica) DO UPDATE SET heartbeat_at = now()"
                ),
                {"me": self.replica},
            )
            await connection.execute(
                text(
                    "DELETE FROM ingest_replicas"
                    " WHERE heartbeat_at < now() - make_interval(secs => :forget)"
                ),
                {"forget": FORGET_REPLICA_S},
            )
            live = await connection.execute(
                text(
                    "SELECT count(*) FROM ingest_replicas"
                    " WHERE heartbeat_at > now() - make_interval(secs => :ttl)"
                ),
                {"ttl": self.ttl_s},
            )
            return max(1, int(live.scalar_one()))

    async def acquire(self) -> Lease | None:
        """Take one free or expired shard (the lowest), or None if there is none."""
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(
                    text(
                        "UPDATE ingest_shard_leases"
                        " SET holder = :me, token = token + 1, acquired_at = now(),"
                        " expires_at = now() + make_interval(secs => :ttl)"
                        " WHERE shard = ("
                        "  SELECT shard FROM ingest_shard_leases"
                        "  WHERE shard < :shards AND (holder IS NULL OR expires_at < now())"
                        "  ORDER BY shard LIMIT 1 FOR UPDATE SKIP LOCKED)"
                        " AND (holder IS NULL OR expires_at < now())"
                        " RETURNING shard, token"
                    ),
                    {"me": self.replica, "ttl": self.ttl_s, "shards": self.shards},
                )
            ).first()
        return None if row is None else Lease(int(row.shard), int(row.token))

    async def renew(self, leases: list[Lease]) -> set[int]:
        """Extend the given leases; returns the shards still ours (the others were lost)."""
        if not leases:
            return set()
        async with self.engine.begin() as connection:
            rows = await connection.execute(
                text(
                    "UPDATE ingest_shard_leases"
                    " SET expires_at = now() + make_interval(secs => :ttl)"
                    " WHERE holder = :me AND (shard, token) IN"
                    "  (SELECT * FROM unnest(CAST(:shards AS int[]), CAST(:tokens AS bigint[])))"
                    " RETURNING shard"
                ),
                {
                    "me": self.replica,
                    "ttl": self.ttl_s,
                    "shards": [lease.shard for lease in leases],
                    "tokens": [lease.token for lease in leases],
                },
            )
            return {int(shard) for shard in rows.scalars()}

    async def release(self, lease: Lease) -> None:
        """Free a shard at once for another replica (its token stays: the next is higher)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE ingest_shard_leases SET holder = NULL, expires_at = now()"
                    " WHERE shard = :shard AND holder = :me AND token = :token"
                ),
                {"shard": lease.shard, "me": self.replica, "token": lease.token},
            )

    async def leave(self) -> None:
        """This replica stops: it is no longer counted among the live ones."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM ingest_replicas WHERE replica = :me"), {"me": self.replica}
            )

    async def fence(self, connection: AsyncConnection, lease: Lease) -> None:
        """In a batch's transaction: refuse the commit unless the lease is still ours."""
        result = await connection.execute(
            text(
                "UPDATE ingest_shard_leases SET last_commit_at = now()"
                " WHERE shard = :shard AND holder = :me AND token = :token"
            ),
            {"shard": lease.shard, "me": self.replica, "token": lease.token},
        )
        if result.rowcount != 1:
            raise FencedError(
                f"shard {lease.shard}: lease token {lease.token} is no longer ours"
                " (another replica took the shard over); batch not committed"
            )
