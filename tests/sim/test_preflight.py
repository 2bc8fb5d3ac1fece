"""`storegate sim` checks that no live client already is one of its stores' edge nodes."""

from __future__ import annotations

import time

from protocols.codec import encode, topic_for
from protocols.messages import NodeState, Status
from protocols.mqtt import MqttSettings
from simulators.preflight import nodes_in_use
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker

NODES = [("store-301", "pi-front"), ("store-302", "pi-1")]


def _status(store: str, node: str, state: NodeState) -> Status:
    return Status(store=store, node=node, seq=0, state=state, bd_seq=1)


def _retain(broker: MosquittoBroker, *messages: Status) -> None:
    client = publisher(broker.host, broker.port)
    for message in messages:
        client.publish(topic_for(message), encode(message), qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_free_and_offline_nodes_are_not_in_use(mosquitto_broker: MosquittoBroker) -> None:
    settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
    assert nodes_in_use(settings, NODES, grace_s=5, settle_s=0.3) == []
    _retain(mosquitto_broker, _status("store-301", "pi-front", NodeState.OFFLINE))
    started = time.monotonic()
    assert nodes_in_use(settings, NODES, grace_s=5, settle_s=0.3) == []
    assert time.monotonic() - started < 3  # nothing online: no waiting for a will


def test_an_online_node_whose_will_never_comes_is_in_use(mosquitto_broker: MosquittoBroker) -> None:
    settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
    _retain(mosquitto_broker, _status("store-302", "pi-1", NodeState.ONLINE))
    started = time.monotonic()
    assert nodes_in_use(settings, NODES, grace_s=1.5, settle_s=0.3) == [("store-302", "pi-1")]
    assert time.monotonic() - started >= 1.5  # it waited for a Last Will that never came


def test_an_unreachable_broker_is_left_to_the_edge_to_report() -> None:
    from tests.servers import free_port

    settings = MqttSettings(host="127.0.0.1", port=free_port())
    assert nodes_in_use(settings, NODES, grace_s=1, settle_s=0.1) == []
