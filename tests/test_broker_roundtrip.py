"""Every message type crosses a real broker (Mosquitto and the embedded one) intact."""

from __future__ import annotations

import time

from protocols import decode, encode, topic_for
from protocols.topics import TOPIC_PREFIX
from tests.mqtt_helpers import Collector, publisher
from tests.samples import all_samples
from tests.servers import BrokerProcess


def test_every_message_type_round_trips_through_a_real_broker(any_broker: BrokerProcess) -> None:
    samples = all_samples()
    collector = Collector(any_broker.host, any_broker.port, [f"{TOPIC_PREFIX}/#"])
    client = publisher(any_broker.host, any_broker.port)
    try:
        for message in samples:
            client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)
        received = collector.take(len(samples))
    finally:
        client.disconnect()
        client.loop_stop()
        collector.close()
    by_type = {}
    for msg in received:
        decoded = decode(msg.payload, topic=msg.topic)
        by_type[decoded.type] = decoded
    assert by_type == {m.type: m for m in samples}


def test_broker_can_be_killed_and_restarted_on_the_same_port(any_broker: BrokerProcess) -> None:
    port = any_broker.port
    any_broker.kill()
    assert not any_broker.is_running()
    time.sleep(0.2)
    any_broker.start()
    assert any_broker.is_running()
    assert any_broker.port == port
    collector = Collector(any_broker.host, port, [f"{TOPIC_PREFIX}/#"])
    client = publisher(any_broker.host, port)
    try:
        message = all_samples()[0]
        client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)
        [received] = collector.take(1)
    finally:
        client.disconnect()
        client.loop_stop()
        collector.close()
    assert decode(received.payload) == message
