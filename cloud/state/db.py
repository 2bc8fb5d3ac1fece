"""Engine set-up (SQLite in WAL mode, or PostgreSQL) and migrations at start-up."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Engine, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL (readers never block the ingest writer)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


_WRITERS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()` for a transaction that writes.

    SQLite has one writer at a time, and a writer that finds the lock taken polls it from
    sqlite3's busy handler, sleeping up to 100 ms between polls, so under contention some
    writers wait many polls while others slip in (`storegate bench --only orders`: 16
    concurrent orders gave a p99 of 1.4 s against a p50 of 30 ms). The writers of this
    process queue on one lock instead, first come first served; another process's writers
    still meet the busy handler. Every transaction of the cloud that writes takes it (the
    ingest, the API's routes, the notifiers, retention), so none of them polls behind
    another; reads use `engine.connect()` and never wait for it (WAL). Not re-entrant: a
    writer must not open a second `writing` on the same engine inside its own. PostgreSQL
    locks rows, not the database: a plain begin().
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as connection:
            yield connection
        return
    lock = _WRITERS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITERS[engine.sync_engine] = asyncio.Lock()
    async with lock, engine.begin() as connection:
        yield connection


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


_MIGRATE_LOCK = 0x5701_6A7E  # an arbitrary, fixed advisory lock key of storegate's migrations


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


class _AlembicInfoAtDebug(logging.Filter):
    """alembic says "Context impl SQLiteImpl", "Running upgrade ..." at INFO on every start:
    routine for us, so those lines show only when the log level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("alembic").isEnabledFor(logging.DEBUG)


_ALEMBIC_INFO_AT_DEBUG = _AlembicInfoAtDebug()
for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).addFilter(_ALEMBIC_INFO_AT_DEBUG)


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema, the time-series `history` table included, to the newest revision."""

    def upgrade(connection: Connection) -> None:
        # "heads": each domain (cloud/domains.py) branches its own revisions off the core.
        command.upgrade(_alembic_config(connection), "heads")

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas started together would race to create the same tables: one migrates
            # at a time (the lock ends with the transaction), the others then find it done.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK}
            )
        await connection.run_sync(upgrade)


def insert_for(
    connection: AsyncConnection | Connection, table: Table
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT on this connection's dialect."""
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r} (use SQLite or PostgreSQL)")


async def upsert(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
) -> None:
    """Insert or update `rows` (all with the same columns) on the primary key `keys`.

    This is the ingestor's hot path (thousands of rows per batch), so it goes to the driver
    directly with one prepared `INSERT ... ON CONFLICT DO UPDATE` (same syntax on SQLite and
    PostgreSQL) and SQLAlchemy's own per-type bind processors; going through the ORM-level
    `executemany` cost about 3x more per row.
    """
    if not rows:
        return
    columns = list(rows[0])
    sql, processors = _upsert_sql(connection.dialect, table, tuple(columns), tuple(keys))
    params = [
        tuple(
            value if process is None else process(value)
            for value, process in zip((row[c] for c in columns), processors, strict=True)
        )
        for row in rows
    ]
    await connection.exec_driver_sql(sql, params)


_Upsert = tuple[str, list[Any]]
_UPSERT_CACHE: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], _Upsert] = {}


def _upsert_sql(
    dialect: Dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]
) -> _Upsert:
    cache_key = (dialect.name, table.name, columns, keys)
    cached = _UPSERT_CACHE.get(cache_key)
    if cached is not None:
        return cached
    if dialect.name not in ("sqlite", "postgresql"):
        raise RuntimeError(f"unsupported database dialect {dialect.name!r}")
    quote = dialect.identifier_preparer.quote
    if dialect.paramstyle == "qmark":
        marks = ["?"] * len(columns)
    elif dialect.paramstyle in ("numeric_dollar",):
        marks = [f"${i}" for i in range(1, len(columns) + 1)]
    elif dialect.paramstyle in ("format", "pyformat"):
        marks = ["%s"] * len(columns)
    else:
        raise RuntimeError(f"unsupported paramstyle {dialect.paramstyle!r}")
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in keys)
    # Only identifiers of our own tables, quoted by the dialect; values go as parameters.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)})"  # noqa: S608
        f" VALUES ({', '.join(marks)})"
        f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET {updates}"
    )
    processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    _UPSERT_CACHE[cache_key] = (sql, processors)
    return sql, processors
