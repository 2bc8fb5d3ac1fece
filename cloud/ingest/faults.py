"""Why a batch failed: the data of one of its messages, or the storage itself.

The difference decides what the ingestor does. Storage that is down (connection refused or
lost, disk full, database locked, a transaction aborted by a deadlock) is retried with the
whole batch un-acked: nothing is lost, and the batch goes through once storage is back. A
message whose data the store refuses (a number out of a column's range, NUL in PostgreSQL
text, a value too long, a constraint) would fail the same way forever: retrying it would
stop the stream, and every stream queued behind it. So it is isolated and dead-lettered,
and the rest of its batch is applied.

A failure that is neither (an exception of our own code) is treated like data: it is
isolated and dead-lettered as `internal_error`, with the exception in the detail.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

# SQLSTATE classes (PostgreSQL appendix A): 22 data exception (out of range, invalid text
# such as NUL, value too long), 23 integrity constraint violation, 54 program limit
# exceeded (a value too large for an index row). Every other class (08 connection,
# 40 rollback, 53 resources, 57 operator intervention, 58 system, XX internal, 42 a schema
# or permission problem) is the server's state, not the message's.
_DATA_SQLSTATE_CLASSES = ("22", "23", "54")


class Fault(StrEnum):
    DATA = "data_error"  # the store refuses this data: dead-letter the message
    UNAVAILABLE = "unavailable"  # storage down: retry the batch
    BUG = "internal_error"  # our code failed on it: dead-letter the message


def classify(exc: BaseException) -> Fault:
    """What a failure of a batch's transaction means; see the module docstring."""
    for cause in _chain(exc):
        if isinstance(
            cause, (DataError, IntegrityError, sqlite3.DataError, sqlite3.IntegrityError)
        ):
            return Fault.DATA
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            # asyncpg's errors carry the server's code; SQLAlchemy wraps most of them in a
            # plain DBAPIError, so the code, not the wrapper's class, says what happened.
            return Fault.DATA if sqlstate.startswith(_DATA_SQLSTATE_CLASSES) else Fault.UNAVAILABLE
        if isinstance(cause, (OverflowError, UnicodeError)):
            # A value the driver cannot encode, raised by the driver and not wrapped by
            # SQLAlchemy: sqlite3 binding an integer beyond 64 bits ("Python int too large
            # to convert to SQLite INTEGER"), a lone surrogate in a string.
            return Fault.DATA
    if isinstance(exc, (DBAPIError, OSError)):
        return Fault.UNAVAILABLE
    return Fault.BUG


def describe(exc: BaseException, limit: int = 300) -> str:
    """The store's own words for a failure, one line, without SQL or parameters."""
    cause = _chain(exc)[-1]  # the driver's own exception, named for what happened
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (`orig`) and what it was raised from, outermost first.

    Not `__context__`: an error raised while handling another (a lost connection during
    the rollback after a data error) is about itself, not about what it interrupted.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 16 and all(current is not c for c in chain):
        chain.append(current)
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return chain
