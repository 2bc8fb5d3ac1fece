"""Commands against the running daemon through a real broker: every one is answered."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.codec import encode
from protocols.messages import AckStatus, Birth, Command, CommandAck, Health, utc_now
from protocols.topics import command_topic
from tests.edge.helpers import (
    NODE,
    STORE,
    EdgeProcess,
    Watcher,
    edge_config,
    sim_device,
    stream_messages,
)
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker


def _command(name: str, *, expires_in: float = 60, **fields: Any) -> Command:
    return Command(
        store=STORE,
        node=NODE,
        seq=1,
        name=name,
        correlation_id=f"corr-{uuid.uuid4().hex[:12]}",
        expires_at=utc_now() + timedelta(seconds=expires_in),
        **fields,
    )


class Rig:
    def __init__(self, tmp_path: Path, broker: MosquittoBroker, edge: EdgeProcess) -> None:
        self.watcher = Watcher(broker.host, broker.port)
        self.pub = publisher(broker.host, broker.port)
        self.edge = edge
        self.config = edge.config
        edge.start()
        self.watcher.wait_for(lambda m: m.type == "birth", what="birth")

    def send(self, command: Command) -> str:
        self.pub.publish(str(command.topic()), encode(command), qos=1).wait_for_publish(10)
        return command.correlation_id

    def send_raw(self, name: str, payload: bytes) -> None:
        self.pub.publish(command_topic(STORE, NODE, name), payload, qos=1).wait_for_publish(10)

    def acks(self, correlation_id: str, count: int, timeout: float = 20) -> list[CommandAck]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [
                m
                for m in self.watcher.of_type("ack")
                if isinstance(m, CommandAck) and m.correlation_id == correlation_id
            ]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{correlation_id}: fewer than {count} acks")


@pytest.fixture
def rig(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> Iterator[Rig]:
    devices = [sim_device("reader-1", rate_hz=10), sim_device("crasher", rate_hz=50, crash_after=3)]
    edge = EdgeProcess(edge_config(tmp_path, mosquitto_broker.port, devices))
    edge_processes.append(edge)
    rig = Rig(tmp_path, mosquitto_broker, edge)
    yield rig
    rig.watcher.close()
    rig.pub.disconnect()
    rig.pub.loop_stop()


def test_commands_are_answered_and_nothing_stops_the_daemon(rig: Rig) -> None:
    # resync: accepted, done, and a new birth
    births_before = len(rig.watcher.of_type("birth"))
    acks = rig.acks(rig.send(_command("resync")), 2)
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.DONE]
    assert acks[1].result is not None
    birth_seq = acks[1].result["birth_seq"]
    birth = rig.watcher.wait_for(lambda m: isinstance(m, Birth) and m.seq == birth_seq)
    assert len(rig.watcher.of_type("birth")) > births_before
    assert isinstance(birth, Birth)
    assert {d.device for d in birth.devices} == {"reader-1", "crasher"}

    # expired
    (ack,) = rig.acks(rig.send(_command("resync", expires_in=-1)), 1)
    assert (ack.status, ack.reason) == (AckStatus.REJECTED, "expired")

    # unknown command, unknown device
    (ack,) = rig.acks(rig.send(_command("self-destruct")), 1)
    assert ack.status is AckStatus.REJECTED
    assert "unknown command" in (ack.reason or "")
    (ack,) = rig.acks(rig.send(_command("sim.crash", target="nope")), 1)
    assert ack.status is AckStatus.REJECTED
    assert "unknown device" in (ack.reason or "")

    # malformed with a usable correlation id: rejected with the decode error's reason
    rig.send_raw("resync", b'{"v":1,"type":"command","correlation_id":"corr-broken-1"}')
    (ack,) = rig.acks("corr-broken-1", 1)
    assert ack.status is AckStatus.REJECTED
    assert (ack.reason or "").startswith("invalid:")
    assert ack.command == "resync"

    # malformed without one: counted, and the daemon carries on
    rig.send_raw("resync", b"\xff not json at all")
    health = rig.watcher.wait_for(
        lambda m: isinstance(m, Health) and "command.malformed" in m.outbox.dropped,
        what="health counting the malformed command",
    )
    assert isinstance(health, Health)
    assert health.outbox.dropped["command.malformed"] == 1
    assert rig.edge.running()

    # a driver command crashes the reader on demand; it is restarted and keeps publishing
    acks = rig.acks(rig.send(_command("sim.crash", target="reader-1")), 2)
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.DONE]
    restarted = rig.watcher.wait_for(
        lambda m: (
            isinstance(m, Health)
            and any(d.device == "reader-1" and d.restarts >= 1 for d in m.drivers)
        ),
        what="health showing the restart",
    )
    assert isinstance(restarted, Health)
    reader = next(d for d in restarted.drivers if d.device == "reader-1")
    assert "crash requested" in (reader.last_error or "")
    count_then = len(stream_messages(rig.watcher, "rfid/reader-1"))
    time.sleep(2)
    assert len(stream_messages(rig.watcher, "rfid/reader-1")) > count_then
    assert rig.edge.stop() == 0


def test_crashing_driver_backs_off_and_the_daemon_keeps_publishing(rig: Rig) -> None:
    time.sleep(6)
    health = rig.watcher.of_type("health")[-1]
    assert isinstance(health, Health)
    crasher = next(d for d in health.drivers if d.device == "crasher")
    # without backoff it would crash ~every 60 ms (dozens of times by now); with 0.5 s
    # doubling, a handful
    assert 2 <= crasher.restarts <= 6, crasher
    assert crasher.state.value in ("backoff", "running")
    assert "simulated crash after 3 messages" in (crasher.last_error or "")
    reader = next(d for d in health.drivers if d.device == "reader-1")
    assert reader.restarts == 0
    assert reader.events_per_s > 0
    assert rig.edge.running()
    assert rig.edge.stop() == 0


def test_reload_config_restarts_changed_drivers_and_rejects_a_bad_file(rig: Rig) -> None:
    config = yaml.safe_load(rig.config.read_text())
    config["devices"][0]["options"]["rate_hz"] = 20
    config["devices"].append(sim_device("reader-2", rate_hz=5))
    rig.config.write_text(yaml.safe_dump(config))
    acks = rig.acks(rig.send(_command("reload-config")), 2)
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.DONE], acks
    assert acks[1].result == {
        "changed": ["reader-1"],
        "added": ["reader-2"],
        "removed": [],
        "restart_required": [],
    }
    rig.watcher.wait_for(lambda m: m.stream == "rfid/reader-2", what="the new reader's events")

    config["devices"][1]["options"]["rate_hz"] = -1
    rig.config.write_text(yaml.safe_dump(config))
    (ack,) = rig.acks(rig.send(_command("reload-config")), 1)
    assert ack.status is AckStatus.REJECTED
    assert "devices.1.options.rate_hz" in (ack.reason or "")
    assert rig.edge.running()
    assert rig.edge.stop() == 0
