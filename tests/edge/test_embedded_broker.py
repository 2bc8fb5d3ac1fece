"""The daemon against the embedded broker the demo uses (MQTT 3.1.1 on its default listener)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from protocols.messages import Birth, NodeState, Status
from tests.edge.helpers import (
    EdgeProcess,
    Watcher,
    assert_exactly_once_in_order,
    edge_config,
    sim_device,
    stream_messages,
)
from tests.servers import EmbeddedBroker


def test_stream_birth_and_last_will_on_the_embedded_broker(
    tmp_path: Path, embedded_broker: EmbeddedBroker, edge_processes: list[EdgeProcess]
) -> None:
    broker = embedded_broker
    config = edge_config(
        tmp_path, broker.port, [sim_device(rate_hz=20)], mqtt={"protocol": "3.1.1"}
    )
    watcher = Watcher(broker.host, broker.port)
    edge = EdgeProcess(config)
    edge_processes.append(edge)
    edge.start()
    birth = watcher.wait_for(lambda m: m.type == "birth", what="birth")
    time.sleep(2)
    edge.signal(signal.SIGKILL)
    edge.wait()
    will = watcher.wait_for(
        lambda m: isinstance(m, Status) and m.state is NodeState.OFFLINE, what="last will"
    )
    assert isinstance(will, Status)
    assert isinstance(birth, Birth)
    assert will.bd_seq == birth.bd_seq
    watcher.close()
    assert len(assert_exactly_once_in_order(stream_messages(watcher, "rfid/reader-1"))) > 10
