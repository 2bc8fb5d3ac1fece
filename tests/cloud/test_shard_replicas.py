"""Three `storegate cloud` replicas share six shards over one PostgreSQL and a real
Mosquitto; one is SIGKILLed while every store streams. Its shards resume on the others
within 10 s, and every message is applied exactly once, in order, with no resync.

Every message carries one item that left the store, with an EPC of its own (store, seq):
the inventory domain appends one `item_departures` row per such item inside the batch's
transaction, so a lost message is a missing row, a message applied twice is a second row,
and a stream applied out of order shows in the rows' insertion order.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud.ingest.sharded import shard_of
from protocols.codec import encode, topic_for
from protocols.messages import ItemEvent, ItemEventKind, RfidEvents
from tests.cloud.cloudproc import CloudProcess, cloud_config, wait_until
from tests.cloud.conftest import PostgresServer, postgres_server  # noqa: F401  (fixture)
from tests.cloud.streams import NODE, READER, birth, gtin
from tests.servers import MosquittoBroker, mosquitto

pytestmark = pytest.mark.timeout(150)

STORES = [f"store-{letter}" for letter in "abcdefgh"]
SHARDS, REPLICAS = 6, 3
RATE_HZ = 10  # per store
TAKEOVER_S = 10.0


def epc(store_index: int, seq: int) -> str:
    return f"3034257BF7194E40{store_index:02X}{seq:06X}"


def message(store_index: int, seq: int) -> RfidEvents:
    now = datetime.now(UTC)
    return RfidEvents(
        store=STORES[store_index],
        node=NODE,
        seq=seq,
        reader=READER,
        event_time=now,
        items=[ItemEvent(kind=ItemEventKind.LEFT_STORE, epc=epc(store_index, seq), at=now)],
    )


class Database:
    def __init__(self, url: str) -> None:
        self.url = url

    def fetch(self, sql: str, **params: Any) -> list[Any]:
        async def run() -> list[Any]:
            engine = create_async_engine(self.url)
            try:
                async with engine.connect() as connection:
                    return list((await connection.execute(text(sql), params)).mappings())
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def holders(self) -> dict[int, str | None]:
        rows = self.fetch(
            "SELECT shard, holder FROM ingest_shard_leases WHERE expires_at > now()"
            " OR holder IS NULL ORDER BY shard"
        )
        return {row["shard"]: row["holder"] for row in rows}

    def hw(self) -> dict[str, int]:
        rows = self.fetch(
            "SELECT store_id, hw FROM stream_positions WHERE stream = :stream",
            stream=f"rfid/{READER}",
        )
        return {row["store_id"]: row["hw"] or 0 for row in rows}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    (tmp_path / "broker").mkdir()
    broker = mosquitto(tmp_path / "broker", extra_config="max_inflight_messages 0\n")
    broker.start()
    yield broker
    broker.kill()


def test_a_killed_replica_shards_resume_elsewhere_nothing_lost_or_applied_twice(
    broker: MosquittoBroker,
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = postgres_server.create_database()
    database = Database(url)
    replicas: list[CloudProcess] = []
    for n in range(REPLICAS):
        workdir = tmp_path / f"replica-{n}"
        workdir.mkdir()
        config = cloud_config(
            broker.port,
            workdir,
            stores={store: [NODE] for store in STORES},
            client_id="ingest",
            shards=SHARDS,
            replica_id=f"replica-{n}",
        )
        config["database_url"] = url
        config["mqtt"]["client_id"] = f"replica-{n}"  # its own session for offers, etc.
        replicas.append(CloudProcess(workdir, config))
    try:
        for replica in replicas:
            replica.start()
        # the leases settle at two shards each (a replica takes ceil(6 / live) at most)
        wait_until(
            lambda: (
                sorted(str(h) for h in database.holders().values())
                == sorted(f"replica-{n}" for n in range(REPLICAS) for _ in range(2))
            ),
            30,
            "two shards per replica",
        )

        clients = []
        for index, store in enumerate(STORES):
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{store}")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            first = birth(1, rfid_seq=0, store=store, shelves={("shelf-1", gtin(index)): 1})
            client.publish(topic_for(first), encode(first), qos=1).wait_for_publish(10)
            clients.append(client)

        sent = [0] * len(STORES)
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                for index, client in enumerate(clients):
                    sent[index] += 1
                    event = message(index, sent[index])
                    client.publish(topic_for(event), encode(event), qos=1)
                time.sleep(1 / RATE_HZ)

        streamer = threading.Thread(target=stream)
        streamer.start()
        try:
            time.sleep(4)
            victim = replicas[0]
            taken = [k for k, holder in database.holders().items() if holder == "replica-0"]
            assert len(taken) == 2
            before = database.hw()
            assert victim.process is not None
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
            killed_at = time.monotonic()
            # resumed: every store of the victim's shards commits past where it stood
            stores_of_victim = [
                store for store in STORES if store in before and shard_of(store, SHARDS) in taken
            ]
            assert stores_of_victim, "the victim's shards had stores"

            def resumed() -> bool:
                now = database.hw()
                return all(now.get(s, 0) > before[s] + RATE_HZ for s in stores_of_victim)

            wait_until(resumed, 30, "the victim's stores committing again")
            resumed_after = time.monotonic() - killed_at
            print(f"the victim's stores committed again {resumed_after:.1f} s after the kill")
            holders = database.holders()
            assert set(holders.values()) <= {"replica-1", "replica-2"}
            time.sleep(3)
        finally:
            stop.set()
            streamer.join(10)
        for client in clients:
            client.loop_stop()
            client.disconnect()

        wait_until(
            lambda: database.hw() == {store: sent[i] for i, store in enumerate(STORES)},
            30,
            "every stream committed to its last seq",
        )
        for index, store in enumerate(STORES):
            rows = database.fetch(
                "SELECT epc FROM item_departures WHERE store_id = :store ORDER BY id", store=store
            )
            epcs = [row["epc"] for row in rows]
            assert len(epcs) == sent[index], f"{store}: {len(epcs)} applied of {sent[index]}"
            assert epcs == [epc(index, seq) for seq in range(1, sent[index] + 1)], (
                f"{store}: applied twice or out of order"
            )
        resyncs = database.fetch("SELECT count(*) AS n FROM commands WHERE name = 'resync'")
        assert resyncs[0]["n"] == 0
        dead = database.fetch("SELECT count(*) AS n FROM dead_letters")
        assert dead[0]["n"] == 0
        assert resumed_after <= TAKEOVER_S, f"resumed {resumed_after:.1f} s after the kill"
        for replica in replicas[1:]:
            assert replica.alive()
    finally:
        for replica in replicas:
            replica.kill()
