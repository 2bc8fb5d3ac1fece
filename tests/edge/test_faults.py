"""Fault injection with real processes: the broker goes away, the daemon is SIGKILLed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from protocols.messages import Birth, Health, NodeState, Status
from tests.edge.helpers import (
    EdgeProcess,
    Watcher,
    assert_exactly_once_in_order,
    edge_config,
    sim_device,
    stream_messages,
)
from tests.servers import MosquittoBroker

STREAM = "rfid/reader-1"


def _online(watcher: Watcher, after_bd_seq: int = 0) -> Status:
    message = watcher.wait_for(
        lambda m: isinstance(m, Status) and m.state is NodeState.ONLINE and m.bd_seq > after_bd_seq,
        what="online status",
    )
    assert isinstance(message, Status)
    return message


def test_broker_down_30s_every_event_arrives_once_in_order(
    tmp_path: Path, persistent_mosquitto: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> None:
    broker = persistent_mosquitto
    config = edge_config(tmp_path, broker.port, [sim_device(rate_hz=20)])
    watcher = Watcher(broker.host, broker.port)
    edge = EdgeProcess(config)
    edge_processes.append(edge)
    edge.start()
    first = _online(watcher)
    time.sleep(2)
    broker.stop()
    time.sleep(30)  # the daemon keeps producing into its outbox
    assert edge.running()
    broker.start()
    # a new connection, a new bd_seq (bumped before every CONNECT attempt, so by more than 1)
    _online(watcher, after_bd_seq=first.bd_seq)
    time.sleep(3)
    assert edge.stop() == 0
    time.sleep(0.5)
    watcher.close()
    seqs = assert_exactly_once_in_order(stream_messages(watcher, STREAM))
    # 30 s at 20 messages/s went through the outbox: far more than was sent before the outage
    assert len(seqs) > 500, len(seqs)
    assert not watcher.errors


def test_sigkill_mid_stream_loses_nothing_persisted(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> None:
    broker = mosquitto_broker
    config = edge_config(tmp_path, broker.port, [sim_device(rate_hz=100)])
    watcher = Watcher(broker.host, broker.port)
    first = EdgeProcess(config)
    edge_processes.append(first)
    first.start()
    _online(watcher)
    time.sleep(3)
    first.signal(signal.SIGKILL)
    first.wait()
    killed_at = len(stream_messages(watcher, STREAM))
    assert killed_at > 50
    second = EdgeProcess(config)
    edge_processes.append(second)
    second.start()
    birth = watcher.wait_for(lambda m: m.type == "birth" and m.bd_seq >= 2, what="second birth")
    time.sleep(2)
    assert second.stop() == 0
    time.sleep(0.5)
    watcher.close()
    seqs = assert_exactly_once_in_order(stream_messages(watcher, STREAM))
    assert len(seqs) > killed_at
    # the restarted daemon continued the stream: its birth knows the persisted position
    assert isinstance(birth, Birth)
    positions = {p.stream: p.seq for p in birth.streams}
    assert positions[STREAM] >= killed_at


def test_last_will_is_retained_offline_with_the_sessions_bd_seq(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> None:
    broker = mosquitto_broker
    config = edge_config(tmp_path, broker.port, [sim_device(rate_hz=1)])
    watcher = Watcher(broker.host, broker.port)
    edge = EdgeProcess(config)
    edge_processes.append(edge)
    edge.start()
    online = _online(watcher)
    edge.signal(signal.SIGKILL)
    edge.wait()
    will = watcher.wait_for(
        lambda m: isinstance(m, Status) and m.state is NodeState.OFFLINE, what="last will"
    )
    assert isinstance(will, Status)
    assert will.bd_seq == online.bd_seq
    watcher.close()
    # retained: a client that subscribes later still learns the node is offline
    late = Watcher(broker.host, broker.port, topic=f"{will.topic()}")
    retained = late.wait_for(lambda m: isinstance(m, Status), what="retained status")
    assert isinstance(retained, Status)
    assert (retained.state, retained.bd_seq) == (NodeState.OFFLINE, online.bd_seq)
    assert late.messages[0][2] is True  # delivered as a retained message
    late.close()


def test_outbox_full_drops_lowest_priority_first_and_health_counts_it(
    tmp_path: Path, persistent_mosquitto: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> None:
    broker = persistent_mosquitto
    devices = [
        sim_device("chatty", rate_hz=400, priority="sighting"),
        sim_device("steady", rate_hz=5, priority="event"),
    ]
    config = edge_config(tmp_path, broker.port, devices, outbox={"max_bytes": 65536})
    watcher = Watcher(broker.host, broker.port)  # its session outlives the broker restart
    broker.stop()
    edge = EdgeProcess(config)
    edge_processes.append(edge)
    edge.start()
    time.sleep(4)  # offline: ~1,600 sightings of ~400 bytes cannot fit in 64 KiB
    broker.start()
    health = watcher.wait_for(
        lambda m: isinstance(m, Health) and bool(m.outbox.dropped), what="health with drops"
    )
    assert isinstance(health, Health)
    dropped = health.outbox.dropped
    assert dropped.get("overflow.sighting", 0) > 100, dropped
    assert "overflow.event" not in dropped, dropped
    assert health.outbox.capacity_bytes == 65536
    assert edge.stop() == 0
    watcher.close()
    # the higher-priority stream lost nothing
    assert_exactly_once_in_order(stream_messages(watcher, "rfid/steady"))
