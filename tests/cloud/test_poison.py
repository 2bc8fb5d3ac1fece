"""Poison messages: isolated by bisection and dead-lettered; storage outages retried.

On a real SQLite and a real PostgreSQL. A message the store refuses (here: NUL in a text
column, which PostgreSQL cannot hold) once failed the batch as if the database were down,
so the batch was retried forever and no store was ingested again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from cloud.domains import Domain, DomainTx
from cloud.ingest.apply import (
    PAYLOAD_EXCERPT_BYTES,
    BatchOutcome,
    Incoming,
    InfrastructureError,
)
from cloud.ingest.faults import Fault, classify
from cloud.state import schema
from cloud.state.db import create_engine
from protocols.messages import Message, RfidEvents
from tests.cloud.conftest import PostgresServer
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, RFID_STREAM, STORE, birth, rfid, wire
from tests.servers import free_port

SHELF, GTIN = "aisle3-shelf2", "00614141000012"


class FailOn(Domain):
    """A domain with a bug that only some messages trigger: at once, or (`at_commit`) in
    its end-of-batch hook, where the failure no longer says which message caused it."""

    name = "fail_on"

    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.at_commit = False
        self._seen: list[int] = []

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if isinstance(message, RfidEvents) and message.seq in self.seqs:
            if not self.at_commit:
                raise RuntimeError(f"cannot handle seq {message.seq}")
            self._seen.append(message.seq)

    async def before_commit(self, tx: DomainTx) -> None:
        seen, self._seen = self._seen, []
        if seen:
            raise RuntimeError(f"cannot handle seq {seen[0]}")


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[StateHarness]:
    h = StateHarness(database_url, {STORE: [NODE]}, domains=[FailOn()])
    await h.start()
    yield h
    await h.close()


def _transactions(h: StateHarness) -> list[int]:
    """A counter of transactions begun on the harness's engine."""
    begun = [0]

    def on_begin(_connection: Any) -> None:
        begun[0] += 1

    event.listen(h.engine.sync_engine, "begin", on_begin)
    return begun


def _nul_in_version(bd_seq: int) -> tuple[str, bytes]:
    """A contract-valid birth whose version PostgreSQL cannot store (text holds no NUL)."""
    topic, payload = wire(birth(bd_seq, seq=bd_seq))
    data = json.loads(payload)
    data["version"] = "0.1\x00"
    return topic, json.dumps(data).encode()


@pytest.fixture
async def pg_harness(postgres_server: PostgresServer) -> AsyncIterator[StateHarness]:
    """PostgreSQL only: SQLite stores NUL in text, and has no SQLSTATE."""
    h = StateHarness(postgres_server.create_database(), {STORE: [NODE]})
    await h.start()
    yield h
    await h.close()


async def test_a_message_the_store_refuses_is_dead_lettered_and_the_rest_applied(
    pg_harness: StateHarness,
) -> None:
    harness = pg_harness
    good = [rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 21)]
    outcome = await harness.feed(*good[:10], _nul_in_version(1), *good[10:])
    assert (outcome.applied, outcome.dead_lettered) == (20, 1)
    (row,) = await harness.rows(schema.dead_letters)
    assert row.reason == "data_error"
    assert row.store_id == STORE  # listed with its store's dead letters
    assert "0x00" in row.detail
    assert "refused" in row.detail
    assert row.topic.endswith("/birth")
    # every good message applied once, in order
    assert harness.history.spooled == [f"{RFID_STREAM}:{seq}" for seq in range(1, 21)]
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 20}
    # and the stream goes on
    after = await harness.feed(rfid(21, {(SHELF, GTIN): 21}))
    assert after.applied == 1
    assert harness.metrics.dead_lettered.labels("data_error")._value.get() == 1


async def test_a_batch_is_split_around_the_message_it_failed_on(harness: StateHarness) -> None:
    failing = harness.applier.domains[0]
    assert isinstance(failing, FailOn)
    failing.seqs = {37}
    begun = _transactions(harness)
    outcome = await harness.feed(*[rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 65)])
    assert (outcome.applied, outcome.dead_lettered) == (63, 1)
    # the batch; 1..36; 37 alone (fails again); its dead letter; 38..64. One at a time: 66.
    assert begun[0] == 5, f"{begun[0]} transactions"
    (row,) = await harness.rows(schema.dead_letters)
    assert row.reason == "internal_error"
    assert "cannot handle seq 37" in row.detail
    assert harness.history.spooled == [f"{RFID_STREAM}:{s}" for s in range(1, 65) if s != 37]
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 64}


async def test_a_batch_failing_at_its_end_is_bisected_not_replayed_one_by_one(
    harness: StateHarness,
) -> None:
    failing = harness.applier.domains[0]
    assert isinstance(failing, FailOn)
    failing.seqs, failing.at_commit = {37}, True
    begun = _transactions(harness)
    outcome = await harness.feed(*[rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 65)])
    assert (outcome.applied, outcome.dead_lettered) == (63, 1)
    # 64 messages, one culprit: the whole batch, then two halves per level down to it
    # (2 * log2(64) = 12), and the dead letter's own; one at a time took 66.
    assert begun[0] <= 14, f"{begun[0]} transactions"
    (row,) = await harness.rows(schema.dead_letters)
    assert row.reason == "internal_error"
    assert "cannot handle seq 37" in row.detail
    assert harness.history.spooled == [f"{RFID_STREAM}:{s}" for s in range(1, 65) if s != 37]
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 64}


@pytest.mark.parametrize("at_commit", [False, True], ids=["at_once", "at_commit"])
async def test_several_culprits_in_one_batch_are_each_isolated(
    harness: StateHarness, at_commit: bool
) -> None:
    failing = harness.applier.domains[0]
    assert isinstance(failing, FailOn)
    failing.seqs, failing.at_commit = {1, 2, 17, 40}, at_commit
    outcome = await harness.feed(*[rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 41)])
    assert (outcome.applied, outcome.dead_lettered) == (36, 4)
    rows = await harness.rows(schema.dead_letters)
    assert [row.detail.rsplit(" ", 1)[1] for row in rows] == ["1", "2", "17", "40"]
    expected = [f"{RFID_STREAM}:{s}" for s in range(1, 41) if s not in failing.seqs]
    assert harness.history.spooled == expected


async def test_storage_that_is_down_is_retried_not_dead_lettered(
    database_url: str, harness: StateHarness, tmp_path: Path
) -> None:
    working = harness.applier.engine
    harness.applier.engine = create_engine(_unreachable(database_url, tmp_path))
    batch = [rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 5)]
    try:
        with pytest.raises(InfrastructureError, match="state store unavailable"):
            await harness.feed(*batch)
    finally:
        await harness.applier.engine.dispose()
        harness.applier.engine = working
    assert await harness.rows(schema.dead_letters) == []
    outcome = await harness.feed(*batch)  # storage back: the same batch goes through
    assert (outcome.applied, outcome.dead_lettered) == (4, 0)


async def test_storage_lost_while_isolating_is_retried_and_applies_each_message_once(
    database_url: str, harness: StateHarness, tmp_path: Path
) -> None:
    failing = harness.applier.domains[0]
    assert isinstance(failing, FailOn)
    failing.seqs = {5}
    working = harness.applier.engine
    down = create_engine(_unreachable(database_url, tmp_path))
    apply_committed = harness.applier._apply_committed
    calls = 0

    async def storage_goes_away(batch: Sequence[Incoming]) -> BatchOutcome:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the batch failed and 1..4 committed: before 5 is retried
            harness.applier.engine = down
        return await apply_committed(batch)

    harness.applier._apply_committed = storage_goes_away  # type: ignore[method-assign]
    batch = [rfid(seq, {(SHELF, GTIN): seq}) for seq in range(1, 11)]
    with pytest.raises(InfrastructureError):
        await harness.feed(*batch)
    await down.dispose()
    harness.applier.engine = working
    outcome = await harness.feed(*batch)  # the consumer's retry: the same batch, un-acked
    assert (outcome.applied, outcome.duplicates, outcome.dead_lettered) == (5, 4, 1)
    assert harness.history.spooled == [f"{RFID_STREAM}:{s}" for s in range(1, 11) if s != 5]
    assert len(await harness.rows(schema.dead_letters)) == 1


def _unreachable(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("postgresql"):
        return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    return f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/state.db"


@pytest.mark.parametrize(
    "payload",
    [
        bytes(range(128, 256)) * 16,  # 2 KiB not UTF-8: each byte escaped as 4 characters
        b"\x00" * 3000,  # NUL, escaped for PostgreSQL
        "é€😀".encode() * 400,  # multi-byte UTF-8
        b"a" * 1023 + b"\xff" * 10,  # an escape that would straddle the limit
    ],
    ids=["binary", "nul", "multibyte", "straddling"],
)
async def test_dead_letter_excerpts_are_at_most_1_kib(
    harness: StateHarness, payload: bytes
) -> None:
    topic = f"storegate/v1/{STORE}/{NODE}/{RFID_STREAM}"
    await harness.feed((topic, payload))
    (row,) = await harness.rows(schema.dead_letters)
    assert row.reason == "not_json"
    assert row.payload_bytes == len(payload)
    excerpt = row.payload_excerpt.encode()
    assert 0 < len(excerpt) <= PAYLOAD_EXCERPT_BYTES == 1024
    assert len(excerpt) > 1000  # cut at the limit, not far below it
    assert not row.payload_excerpt.endswith(("\\", "\\x"))  # no escape cut in half


# ---------------------------------------------------------------------- the classifier


def test_sqlite_integer_overflow_is_a_data_error() -> None:
    connection = sqlite3.connect(":memory:")
    with pytest.raises(OverflowError) as caught:
        connection.execute("SELECT ?", (2**64,))
    assert classify(caught.value) is Fault.DATA


def test_sqlite_locked_is_storage_unavailable(tmp_path: Path) -> None:
    from sqlalchemy import create_engine as create_sync_engine
    from sqlalchemy import text

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_sync_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(DBAPIError, match="locked") as caught, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
        assert classify(caught.value) is Fault.UNAVAILABLE
    finally:
        engine.dispose()
        holder.close()


async def test_postgresql_errors_are_classified_by_their_sqlstate(
    pg_harness: StateHarness,
) -> None:
    from sqlalchemy import text

    async def failure(sql: str) -> BaseException:
        with pytest.raises(DBAPIError) as caught:
            async with pg_harness.engine.begin() as connection:
                await connection.execute(text(sql))
        return caught.value

    assert classify(await failure("SELECT 9223372036854775807::bigint + 1")) is Fault.DATA
    assert classify(await failure("SELECT 'a' || chr(0)")) is Fault.DATA  # 54000
    assert classify(await failure("UPDATE nodes SET version = repeat('x', 65)")) is Fault.DATA
    assert classify(await failure("SELECT 1/0")) is Fault.DATA
    assert classify(await failure("SELECT no_such_column FROM nodes")) is Fault.UNAVAILABLE
    # terminated by the administrator (SQLSTATE 57P01): the server's state, not the data
    assert classify(await failure("SELECT pg_terminate_backend(pg_backend_pid())")) is (
        Fault.UNAVAILABLE
    )


def test_our_own_bugs_are_not_mistaken_for_storage() -> None:
    assert classify(RuntimeError("bug")) is Fault.BUG
    assert classify(KeyError("bug")) is Fault.BUG
    assert classify(ConnectionRefusedError()) is Fault.UNAVAILABLE
