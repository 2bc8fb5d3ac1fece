"""Shard leases on a real PostgreSQL: the single statements, the database clock, and the
fencing token checked in a batch's own transaction (cloud/ingest/leases.py); and a shard's
consumer on a real Mosquitto that never takes its session back once the lease is gone."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.broker import policy
from cloud.broker.dynsec_file import AdminLogin, CloudLogin, Logins, ShardLogins, build_document
from cloud.config import CloudSettings, IngestSettings
from cloud.ingest.apply import Incoming, StateApplier
from cloud.ingest.consumer import Consumer
from cloud.ingest.leases import FencedError, Lease, LeaseTable
from cloud.ingest.registry import Registry
from cloud.ingest.sharded import shard_client_id, shard_of
from cloud.metrics import CloudMetrics
from cloud.runtime import CloudRuntime
from cloud.state import schema
from cloud.state.db import create_engine, migrate
from protocols.mqtt import MqttSettings
from protocols.topics import node_filter
from tests.cloud.conftest import PostgresServer
from tests.cloud.harness import RecordingHistory
from tests.cloud.streams import NODE, RFID_STREAM, STORE, gtin, rfid, wire
from tests.servers import MosquittoBroker
from tests.shipped_broker import Client


@pytest.fixture
async def engine(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_server.create_database())
    await migrate(engine)
    yield engine
    await engine.dispose()


def test_a_store_shard_is_stable_and_spread() -> None:
    # Fixed values: the same shard on every replica, every run, every Python (a salted
    # `hash` would differ between processes and two replicas would consume one store).
    assert [shard_of(f"store-{i:03d}", 6) for i in range(8)] == [4, 5, 0, 0, 0, 3, 2, 5]
    spread = Counter(shard_of(f"store-{i:04d}", 6) for i in range(1200))
    assert sorted(spread) == list(range(6))
    assert min(spread.values()) > 150, spread  # 200 each on average
    assert shard_client_id("storegate-cloud-ingest", 4) == "storegate-cloud-ingest-s4"


async def _expire(engine: AsyncEngine, shard: int) -> None:
    """As if the holder stopped renewing a lease time ago (no test waits for the clock)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE ingest_shard_leases SET expires_at = now() - interval '1 second'"
                " WHERE shard = :shard"
            ),
            {"shard": shard},
        )


async def test_acquire_renew_release_and_takeover_of_an_expired_lease(engine: AsyncEngine) -> None:
    a = LeaseTable(engine, "replica-a", shards=3, ttl_s=30)
    b = LeaseTable(engine, "replica-b", shards=3, ttl_s=30)
    await a.prepare()
    await b.prepare()  # idempotent: every replica runs it at start
    acquired = [await a.acquire() for _ in range(3)]
    assert acquired == [Lease(0, 1), Lease(1, 1), Lease(2, 1)]
    taken = [lease for lease in acquired if lease is not None]
    assert await a.acquire() is None
    assert await b.acquire() is None  # nothing free, nothing expired

    assert await a.renew(taken) == {0, 1, 2}
    await a.release(taken[2])
    assert await b.acquire() == Lease(2, 2)  # a released shard: the token still rises

    await _expire(engine, 1)
    assert await b.acquire() == Lease(1, 2)  # expired: taken over
    # The old holder learns it at its next renewal; a stale token renews nothing.
    assert await a.renew(taken[:2]) == {0}
    assert await a.renew([Lease(1, 2)]) == set()  # b's token, but a is not the holder

    assert await a.heartbeat() == 1
    assert await b.heartbeat() == 2
    await a.leave()
    assert await b.heartbeat() == 1


async def test_concurrent_acquires_never_hand_one_shard_to_two_replicas(
    engine: AsyncEngine,
) -> None:
    tables = [LeaseTable(engine, f"replica-{i}", shards=4, ttl_s=30) for i in range(6)]
    await tables[0].prepare()
    results = await asyncio.gather(*(t.acquire() for t in tables for _ in range(2)))
    leases = [lease for lease in results if lease is not None]
    assert sorted(lease.shard for lease in leases) == [0, 1, 2, 3]


async def _apply_one(applier: StateApplier, seq: int) -> None:
    topic, payload = wire(rfid(seq, {("s1", gtin(1)): seq}))
    await applier.apply([Incoming(topic, payload, seq, 1)])


async def _hw(engine: AsyncEngine) -> int | None:
    t = schema.stream_positions
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(t.c.hw).where(
                    t.c.store_id == STORE, t.c.node_id == NODE, t.c.stream == RFID_STREAM
                )
            )
        ).first()
    return None if row is None else int(row.hw)


async def test_a_stale_holder_cannot_commit_after_a_takeover(engine: AsyncEngine) -> None:
    registry = Registry()
    await registry.register(engine, STORE, [NODE])
    shard = shard_of(STORE, 2)
    old_table = LeaseTable(engine, "replica-old", shards=2, ttl_s=30)
    new_table = LeaseTable(engine, "replica-new", shards=2, ttl_s=30)
    await old_table.prepare()

    def applier(table: LeaseTable, lease: Lease) -> StateApplier:
        async def fence(connection: object) -> None:
            await table.fence(connection, lease)  # type: ignore[arg-type]

        return StateApplier(
            engine, registry, RecordingHistory(), CloudMetrics(), IngestSettings(), fence=fence
        )

    old_lease = None
    while old_lease is None or old_lease.shard != shard:
        old_lease = await old_table.acquire()
    old = applier(old_table, old_lease)
    await _apply_one(old, 1)
    await _apply_one(old, 2)
    assert await _hw(engine) == 2

    # The old holder stalls past its lease; another replica takes the shard over.
    await _expire(engine, shard)
    new_lease = None
    while new_lease is None or new_lease.shard != shard:
        new_lease = await new_table.acquire()
    assert new_lease.token == old_lease.token + 1
    new = applier(new_table, new_lease)
    await _apply_one(new, 3)
    assert await _hw(engine) == 3

    # The old holder wakes up with seq 3 and 4 in hand (its cache says hw 2): refused whole.
    with pytest.raises(FencedError, match="no longer ours"):
        await _apply_one(old, 3)
    with pytest.raises(FencedError):
        await _apply_one(old, 4)
    assert await _hw(engine) == 3
    async with engine.connect() as connection:
        counts = (
            (
                await connection.execute(
                    select(schema.inventory.c.count).where(schema.inventory.c.store_id == STORE)
                )
            )
            .scalars()
            .all()
        )
    assert counts == [3]  # the new holder's value, not overwritten by the stale one
    await _apply_one(new, 4)
    assert await _hw(engine) == 4


class _Session:
    """A shard session as the replica would hand it to its consumer."""

    def __init__(self, mqtt: MqttSettings) -> None:
        self.mqtt = mqtt
        self.lease_valid = True

    def filters(self) -> list[str]:
        return [node_filter(STORE)]

    def may_connect(self) -> bool:
        return self.lease_valid


async def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _shard_consumer(
    broker: MosquittoBroker, tmp_path: Path, client_id: str
) -> tuple[CloudRuntime, Consumer, _Session]:
    settings = CloudSettings.model_validate(
        {
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.1},
            "ingest": {"client_id": "ingest", "spool_dir": str(tmp_path / "spool")},
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
            "stores": [{"id": STORE, "nodes": [NODE]}],
        }
    )
    runtime = CloudRuntime(settings)
    session = _Session(settings.mqtt.model_copy(update={"client_id": client_id}))
    consumer = Consumer(settings, runtime.applier, runtime.metrics, runtime.bus, session=session)
    await migrate(runtime.engine)
    await runtime.registry.seed(runtime.engine, settings.stores)
    consumer.start()
    return runtime, consumer, session


async def test_a_shard_session_taken_over_is_never_connected_again(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    runtime, consumer, session = await _shard_consumer(mosquitto_broker, tmp_path, "ingest-s3")
    worker = asyncio.create_task(consumer.run())
    try:
        await asyncio.to_thread(consumer.connected.wait, 10)
        assert consumer.client_id == "ingest-s3"
        # A takeover comes only after the lease expired, and the old holder's own clock
        # ends its lease a renew interval before that. Mosquitto 2.0 closes the old
        # connection without a reason code, so that clock is what keeps it away.
        session.lease_valid = False
        new_holder = Client(mosquitto_broker, None, client_id="ingest-s3", clean_start=False)
        await _wait_for(lambda: consumer.fenced, 10, "the old session to give up")
        await asyncio.sleep(2)  # several reconnect delays: a ping-pong would show here
        assert new_holder.disconnected is None, "the old holder took the session back"
        assert not consumer.connected.is_set()
        new_holder.close()
    finally:
        consumer.stop()
        await worker
        await consumer.close()
        await runtime.engine.dispose()


async def test_a_shard_whose_lease_is_not_valid_does_not_reconnect(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    runtime, consumer, session = await _shard_consumer(mosquitto_broker, tmp_path, "ingest-s4")
    worker = asyncio.create_task(consumer.run())
    try:
        await asyncio.to_thread(consumer.connected.wait, 10)
        session.lease_valid = False
        await asyncio.to_thread(mosquitto_broker.restart, 0.5)
        await _wait_for(lambda: consumer.fenced, 10, "the consumer to stop")
        assert not consumer.connected.is_set()
    finally:
        consumer.stop()
        await worker
        await consumer.close()
        await runtime.engine.dispose()


def test_shard_settings_are_checked_at_load() -> None:
    base: dict[str, Any] = {
        "mqtt": {"client_id": "storegate-cloud-1"},
        "database_url": "postgresql+asyncpg://cloud@db/storegate",
        "ingest": {"shards": 4},
    }
    assert CloudSettings.model_validate(base).ingest.shards == 4
    changes: list[tuple[dict[str, Any], str]] = [
        ({"database_url": "sqlite+aiosqlite:///x.db"}, "needs a PostgreSQL"),
        ({"mqtt": {}}, "needs its own mqtt.client_id"),
        ({"ingest": {"shards": 4, "lease_ttl_s": 2, "lease_renew_s": 1}}, "at most a third"),
        ({"ingest": {"shards": 4, "shared_group": "g"}}, "exclude each other"),
    ]
    for change, why in changes:
        with pytest.raises(ValueError, match=why):
            CloudSettings.model_validate({**base, **change})
    # One shard (the default) is today's single session: no PostgreSQL, no own client id.
    assert CloudSettings.model_validate({"ingest": {"lease_ttl_s": 2}}).ingest.shards == 1


def test_shard_logins_are_pinned_and_share_one_password() -> None:
    logins = Logins(
        admins=[AdminLogin(username="storegate-admin", password_env="ADMIN")],
        cloud=[CloudLogin(username="storegate-cloud-1", password_env="CLOUD")],
        ingest_shards=ShardLogins(prefix="storegate-cloud-ingest", count=3, password_env="SHARDS"),
    )
    env = {"ADMIN": "a" * 16 + "-admin", "CLOUD": "c" * 16 + "-cloud", "SHARDS": "s" * 16 + "-x"}
    clients = {c["username"]: c for c in build_document(logins, env)["clients"]}
    for k in range(3):
        client = clients[f"storegate-cloud-ingest-s{k}"]
        assert client["clientid"] == client["username"]
        assert client["roles"] == [{"rolename": policy.CLOUD_ROLE}]
    assert "storegate-cloud-ingest-s3" not in clients
    with pytest.raises(ValueError, match="storegate-cloud-ingest-s1"):
        Logins(
            admins=logins.admins,
            cloud=[
                *logins.cloud,
                CloudLogin(username="storegate-cloud-ingest-s1", password_env="C"),
            ],
            ingest_shards=logins.ingest_shards,
        )
