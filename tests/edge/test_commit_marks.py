"""End-to-end acknowledgement with real processes: broker, cloud ingestor, edge daemons.

The edge deletes a message when the cloud's `committed` mark covers it, not on the broker's
PUBACK; these tests take the broker's copy away (SIGKILL before its first autosave, or a
broker with nobody subscribed) and check that every seq still reaches the cloud's state and
history exactly once.
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.cloudproc import CloudProcess, cloud_config, wait_until
from tests.edge.helpers import STORE, EdgeProcess, Watcher, edge_config, sim_device
from tests.servers import MosquittoBroker, mosquitto

STREAM = "rfid/reader-1"
RFID_APPLIED = ("storegate_messages_ingested_total", 'type="rfid.events"')


class EdgeNode:
    """One edge daemon (its own directory, config and outbox) and a look into its outbox."""

    def __init__(self, root: Path, port: int, node: str, shelf: str, **options: Any) -> None:
        self.node = node
        self.shelf = shelf
        workdir = root / node
        workdir.mkdir()
        outbox = {"path": str(workdir / "outbox.db"), "confirm_timeout_s": 2}
        outbox.update(options.pop("outbox", {}))
        device = sim_device("reader-1", shelves=[shelf], **options)
        config = edge_config(workdir, port, [device], node=node, outbox=outbox)
        self.outbox_path = workdir / "outbox.db"
        self.process = EdgeProcess(config)

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.outbox_path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True, timeout=10)
        try:
            return list(connection.execute(sql, args))
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            connection.close()

    def position(self, stream: str = STREAM) -> int:
        rows = self._query("SELECT seq FROM streams WHERE stream = ?", stream)
        return int(rows[0][0]) if rows else 0

    def depth(self) -> int:
        rows = self._query("SELECT COUNT(*) FROM messages")
        return int(rows[0][0]) if rows else 0

    def dropped(self) -> int:
        rows = self._query("SELECT COALESCE(SUM(value), 0) FROM counters WHERE name LIKE 'drop:%'")
        return int(rows[0][0]) if rows else 0


@pytest.fixture
def processes() -> Iterator[list[EdgeProcess | CloudProcess]]:
    started: list[EdgeProcess | CloudProcess] = []
    yield started
    for process in started:
        process.kill()


def _listen_port() -> int:
    """A free port below the ephemeral range. While the broker is down the clients keep
    connecting to its port; from an ephemeral port equal to it, Linux makes a TCP
    self-connection, whose TIME_WAIT then keeps the restarted broker from binding."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _cloud(root: Path, port: int, nodes: list[str], reconnect_s: float = 0.5) -> CloudProcess:
    workdir = root / "cloud"
    workdir.mkdir()
    config = cloud_config(port, workdir, stores={STORE: nodes})
    config["mqtt"].update(reconnect_min_s=reconnect_s, reconnect_max_s=reconnect_s)
    return CloudProcess(workdir, config)


def _caught_up(cloud: CloudProcess, edges: list[EdgeNode], total: int) -> bool:
    return all(cloud.hw(STORE, e.node, STREAM) == total and e.depth() == 0 for e in edges)


def test_broker_sigkill_before_autosave_loses_nothing(
    tmp_path: Path, processes: list[EdgeProcess | CloudProcess]
) -> None:
    (tmp_path / "broker").mkdir()
    # Persistence on, but the first autosave would come after an hour: a SIGKILL loses
    # every session (the ingestor's subscription too), every queued and retained message.
    broker = mosquitto(
        tmp_path / "broker",
        port=_listen_port(),
        persistence=True,
        extra_config="autosave_interval 3600\n",
    )
    broker.start()
    try:
        total = 1200
        # The edges reconnect (after 1 s) before the ingestor (after 3 s): what they send in
        # between the broker PUBACKs with nobody subscribed, as in the field.
        cloud = _cloud(tmp_path, broker.port, ["pi-1", "pi-2"], reconnect_s=3)
        processes.append(cloud)
        cloud.start()
        edges = [
            EdgeNode(tmp_path, broker.port, "pi-1", "shelf-a", rate_hz=100, max_messages=total),
            EdgeNode(tmp_path, broker.port, "pi-2", "shelf-b", rate_hz=100, max_messages=total),
        ]
        for edge in edges:
            processes.append(edge.process)
            edge.process.start()
        wait_until(
            lambda: all(cloud.hw(STORE, e.node, STREAM) >= 200 for e in edges), 30, "ingesting"
        )
        broker.kill()
        killed_at = [e.position() for e in edges]
        assert all(0 < p < total for p in killed_at), killed_at  # under load, mid-stream
        broker.start()
        wait_until(lambda: _caught_up(cloud, edges, total), 60, "every seq committed")
        # 0 lost, 0 applied twice: every seq of both streams is in the state exactly once
        assert cloud.metric(*RFID_APPLIED) == 2 * total
        assert cloud.metric("storegate_gaps_given_up_total") == 0
        assert cloud.query("SELECT count(*) FROM dedup_marks") == [(0,)]
        # live state ends at the last event of each stream: nothing older overwrote it
        inventory = dict(cloud.query("SELECT shelf, count FROM inventory WHERE store_id=?", STORE))
        assert inventory == {"shelf-a": total, "shelf-b": total}
        # history: one shelf_count delta point per message, counts 1..total, per shelf
        # (births add snapshot points without a delta)
        points = (
            "SELECT json_extract(tags, '$.shelf'), count(*),"
            " count(DISTINCT json_extract(fields, '$.count'))"
            " FROM history WHERE measurement = 'shelf_count'"
            " AND json_extract(fields, '$.delta') IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        expected = [("shelf-a", total, total), ("shelf-b", total, total)]
        wait_until(lambda: cloud.query(points) == expected, 30, "history pumped")
        # bounded: the outboxes drained (checked in _caught_up) and dropped nothing, and the
        # daemons' own heartbeats stayed small
        assert [e.dropped() for e in edges] == [0, 0]
        reports = cloud.query("SELECT health FROM nodes WHERE store_id=?", STORE)
        assert len(reports) == 2
        for (health,) in reports:
            report = json.loads(health)
            assert report["rss_bytes"] < 120 * 1024 * 1024, report["rss_bytes"]
            assert report["outbox"]["bytes"] <= report["outbox"]["capacity_bytes"]
        for edge in edges:
            assert edge.process.stop() == 0
        assert cloud.terminate() == 0
    finally:
        broker.kill()


def test_a_puback_without_a_subscriber_deletes_nothing(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, processes: list[EdgeProcess | CloudProcess]
) -> None:
    total = 300
    watcher = Watcher(mosquitto_broker.host, mosquitto_broker.port)  # not the ingestor
    edge = EdgeNode(
        tmp_path, mosquitto_broker.port, "pi-1", "shelf-a", rate_hz=300, max_messages=total
    )
    processes.append(edge.process)
    edge.process.start()
    # the broker took (PUBACKed) all of them: the watcher got every one ...
    wait_until(
        lambda: len({m.seq for m in watcher.of_type("rfid.events")}) == total, 30, "all sent"
    )
    time.sleep(1)
    watcher.close()
    # ... and the edge still holds every one, since no cloud has committed them
    assert edge.depth() == total
    cloud = _cloud(tmp_path, mosquitto_broker.port, ["pi-1"])
    processes.append(cloud)
    cloud.start()  # a new ingestor: the broker kept nothing for it
    wait_until(lambda: _caught_up(cloud, [edge], total), 30, "resent and committed")
    assert cloud.metric(*RFID_APPLIED) == total
    assert dict(cloud.query("SELECT shelf, count FROM inventory")) == {"shelf-a": total}
    assert edge.process.stop() == 0


def test_the_drop_count_is_exactly_the_seqs_missing_at_the_cloud(
    tmp_path: Path, processes: list[EdgeProcess | CloudProcess]
) -> None:
    (tmp_path / "broker").mkdir()
    # the ingestor's session stays across the stop; clients dial the port while it is down
    broker = mosquitto(tmp_path / "broker", port=_listen_port(), persistence=True)
    broker.start()
    try:
        cloud = _cloud(tmp_path, broker.port, ["pi-1"])
        processes.append(cloud)
        cloud.start()
        total = 1600
        # ~400-byte sightings at 400/s: 64 KiB holds ~150 of them, the outage makes ~1,000
        edge = EdgeNode(
            tmp_path,
            broker.port,
            "pi-1",
            "shelf-c",
            rate_hz=400,
            max_messages=total,
            priority="sighting",
            outbox={"max_bytes": 65536},
        )
        processes.append(edge.process)
        edge.process.start()
        wait_until(lambda: cloud.hw(STORE, "pi-1", STREAM) >= 100, 30, "ingesting")
        broker.stop()  # mid-stream: messages in flight, sent but unconfirmed
        wait_until(lambda: edge.position() == total, 30, "the rest produced offline")
        broker.start()
        wait_until(lambda: _caught_up(cloud, [edge], total), 60, "caught up")
        applied = (
            "SELECT count(*) FROM history WHERE measurement = 'shelf_count'"
            " AND json_extract(fields, '$.delta') IS NOT NULL"
        )
        wait_until(lambda: cloud.query(applied) == [(cloud.metric(*RFID_APPLIED),)], 30, "pumped")
        missing = total - int(cloud.metric(*RFID_APPLIED))
        assert edge.dropped() > 500, "the outage dropped too little to test anything"
        assert edge.dropped() == missing
        assert cloud.metric("storegate_gaps_given_up_total") == 0
        assert cloud.query("SELECT count(*) FROM dedup_marks") == [(0,)]
        assert edge.process.stop() == 0
        # no heartbeat seq was taken while offline: every one assigned reached the cloud
        heartbeats = edge.position("health")
        health = ("storegate_messages_ingested_total", 'type="health"')
        wait_until(lambda: cloud.metric(*health) == heartbeats, 10, "every heartbeat seq")
    finally:
        broker.kill()
