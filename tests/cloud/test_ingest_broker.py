"""The ingestor as a real process against a real Mosquitto: crashes, fuzz, resync."""

from __future__ import annotations

import json
import random
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from protocols.codec import decode_as, encode, topic_for
from protocols.messages import AckStatus, Command, CommandAck
from protocols.topics import node_filter
from tests.cloud.cloudproc import CloudProcess, cloud_config, wait_until
from tests.cloud.streams import NODE, RFID_STREAM, STORE, birth, gtin, rfid
from tests.mqtt_helpers import Collector, publisher
from tests.samples import all_samples
from tests.servers import MosquittoBroker


def _publish_all(client: mqtt.Client, items: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(60)


def _valid_stream(
    count: int, shelves: int = 40
) -> tuple[list[tuple[str, bytes]], dict[tuple[str, str], int]]:
    """A birth and `count` rfid messages; returns them and the final inventory they imply."""
    items = [(topic_for(m), encode(m)) for m in [birth(1, rfid_seq=0)]]
    expected: dict[tuple[str, str], int] = {}
    for seq in range(1, count + 1):
        counts = {(f"shelf-{(seq * 7 + k) % shelves}", gtin(k)): seq + k for k in range(5)}
        expected.update(counts)
        message = rfid(seq, counts)
        items.append((topic_for(message), encode(message)))
    return items, expected


def _inventory(cloud: CloudProcess) -> dict[tuple[str, str], int]:
    rows = cloud.query("SELECT shelf, gtin, count FROM inventory WHERE store_id=?", STORE)
    return {(shelf, g): count for shelf, g, count in rows}


@pytest.fixture
def cloud_proc(mosquitto_broker: MosquittoBroker, tmp_path: Path):
    config = cloud_config(
        mosquitto_broker.port,
        tmp_path,
        stores={STORE: [NODE, "pi-back"]},
        batch_max=200,
        # These publishers are not edges (they never resend), so the flood of the fuzz test
        # must not be shed for fairness (tests/cloud/test_flood.py covers that): the queue
        # is large enough for the whole run.
        queue_size=30_000,
    )
    cloud = CloudProcess(tmp_path, config)
    cloud.start()
    yield cloud
    cloud.kill()


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    mosquitto_broker: MosquittoBroker, cloud_proc: CloudProcess
) -> None:
    total = 3000
    items, expected = _valid_stream(total)
    client = publisher(mosquitto_broker.host, mosquitto_broker.port)
    for topic, payload in items:
        client.publish(topic, payload, qos=1)
    wait_until(lambda: cloud_proc.hw(STORE, NODE, RFID_STREAM) >= 300, 60, "ingest under way")
    cloud_proc.kill()
    committed = cloud_proc.hw(STORE, NODE, RFID_STREAM)
    assert committed < total, "the kill came too late to test anything"
    cloud_proc.start()  # same client id: the persistent session kept the rest for us
    wait_until(lambda: cloud_proc.hw(STORE, NODE, RFID_STREAM) == total, 90, "all ingested")
    client.disconnect()
    client.loop_stop()
    assert _inventory(cloud_proc) == expected  # nothing lost
    # nothing applied twice: after the restart exactly the uncommitted rest was applied,
    # everything redelivered up to the committed position was recognised as a duplicate
    applied = cloud_proc.metric("storegate_messages_ingested_total", 'type="rfid.events"')
    assert applied == total - committed
    assert cloud_proc.query("SELECT count(*) FROM dedup_marks") == [(0,)]
    assert cloud_proc.query("SELECT count(*) FROM commands") == [(0,)]  # no gap seen
    assert cloud_proc.query("SELECT count(*) FROM dead_letters") == [(0,)]
    # history went through the spool to the SQL history table, every point of every message
    # (points are keyed by series and time, so a re-spooled batch cannot double them)
    shelf_points = "SELECT count(*) FROM history WHERE measurement = 'shelf_count'"
    wait_until(lambda: cloud_proc.query(shelf_points) == [(5 * total,)], 30, "history pumped")
    assert cloud_proc.terminate() == 0  # and a clean SIGTERM shutdown


# ---------------------------------------------------------------------------- fuzz

BAD_TOPICS = [
    f"storegate/v1/{STORE}/{NODE}/rfid",  # missing device level
    f"storegate/v1/{STORE}/{NODE}/nosuch/x",  # unknown channel
    f"storegate/v1/{STORE}/{NODE}/health/extra",  # too many levels
    f"storegate/v1/{STORE}/bad node/health",  # not an identifier
    "storegate/v1/shopper/tok/offers/more",  # malformed shopper topic
    f"storegate/v1/store-999/{NODE}/health",  # unknown store
    f"storegate/v1/{STORE}/pi-ghost/health",  # unknown node
]


def _mutations(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """Payloads that are each wrong in one way, on topics the ingestor subscribes to."""
    samples = [m for m in all_samples() if not m.channel.from_cloud]  # what the cloud ingests
    out: list[tuple[str, bytes]] = []
    for _ in range(count):
        message = rng.choice(samples)
        topic, payload = topic_for(message), encode(message)
        data = json.loads(payload)
        kind = rng.randrange(10)
        if kind == 0:  # truncated JSON
            payload = payload[: rng.randrange(1, len(payload) - 1)]
        elif kind == 1:  # random bytes, not UTF-8
            payload = b"\xff" + rng.randbytes(rng.randrange(0, 200))
        elif kind == 2:  # JSON that is not an object
            payload = json.dumps(rng.choice([[1, 2], "text", 3.5, None, True])).encode()
        elif kind == 3:  # wrong schema version
            data["v"] = rng.choice([0, 2, "1", 1.5, None])
            payload = json.dumps(data).encode()
        elif kind == 4:  # unknown type
            data["type"] = rng.choice(["rfid.eventz", "", 42, "birthday"])
            payload = json.dumps(data).encode()
        elif kind == 5:  # a required envelope field missing
            del data[rng.choice(["store", "node", "seq", "type"])]  # msg_id has a default
            payload = json.dumps(data).encode()
        elif kind == 6:  # a field of the wrong type or out of range
            field, value = rng.choice(
                [
                    ("seq", -1),
                    ("seq", "x"),
                    ("store", {"a": 1}),
                    ("event_time", "yesterday"),
                    ("sent_time", "2026-11-23T10:00:00"),
                    ("msg_id", "no"),
                ]
            )
            data[field] = value
            payload = json.dumps(data).encode()
        elif kind == 7:  # forged: another node's payload on this node's topic
            data["node"] = "pi-back"
            payload = json.dumps(data).encode()
        elif kind == 8:  # a valid payload on a topic that is wrong for it
            topic = rng.choice(BAD_TOPICS)
        else:  # oversized
            payload = b'{"v":1,"pad":"' + b"x" * (300 * 1024) + b'"}'
        out.append((topic, payload))
    return out


def test_fuzzed_payloads_are_dead_lettered_while_a_valid_stream_flows(
    mosquitto_broker: MosquittoBroker, cloud_proc: CloudProcess
) -> None:
    fuzz = _mutations(random.Random(20261123), 10_000)
    valid, expected = _valid_stream(400)
    mixed = list(fuzz)
    rng = random.Random(7)
    # interleave the valid stream in order among the fuzz
    positions = sorted(rng.sample(range(len(fuzz) + len(valid)), len(valid)))
    for index, item in zip(positions, valid, strict=True):
        mixed.insert(index, item)
    client = publisher(mosquitto_broker.host, mosquitto_broker.port)
    _publish_all(client, mixed)
    client.disconnect()
    client.loop_stop()

    def done() -> bool:
        return int(cloud_proc.query("SELECT count(*) FROM dead_letters")[0][0]) >= len(fuzz)

    wait_until(done, 120, "every fuzzed payload dead-lettered")
    wait_until(lambda: cloud_proc.hw(STORE, NODE, RFID_STREAM) == 400, 30, "valid stream in")
    assert cloud_proc.alive()
    reasons = dict(cloud_proc.query("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
    assert sum(reasons.values()) == len(fuzz)
    assert set(reasons) <= {
        "not_json",
        "not_an_object",
        "unsupported_version",
        "unknown_type",
        "invalid",
        "topic_mismatch",
        "bad_topic",
        "too_large",
        "unknown_store",
        "unknown_node",
    }
    assert cloud_proc.query("SELECT count(*) FROM dead_letters WHERE detail = ''") == [(0,)]
    assert _inventory(cloud_proc) == expected
    assert cloud_proc.metric("storegate_messages_dead_lettered_total", 'reason="not_json"') > 0


def test_gap_sends_exactly_one_resync_on_the_wire(
    mosquitto_broker: MosquittoBroker, cloud_proc: CloudProcess
) -> None:
    commands = Collector(
        mosquitto_broker.host, mosquitto_broker.port, [node_filter(STORE, NODE, "cmd")]
    )
    client = publisher(mosquitto_broker.host, mosquitto_broker.port)
    stream = [birth(1, rfid_seq=0)] + [rfid(s, {("s1", gtin(1)): s}) for s in (1, 2, 5, 6, 9)]
    _publish_all(client, [(topic_for(m), encode(m)) for m in stream])
    (received,) = commands.take(1, timeout=20)
    command = decode_as(Command, received.payload, topic=received.topic)
    assert command.name == "resync"
    assert not command.expired()
    assert (command.args["missing_from"], command.args["missing_to"]) == (3, 4)
    with pytest.raises(TimeoutError):
        commands.take(1, timeout=2)  # the second gap (7..8) is within the rate limit
    ack = CommandAck(
        store=STORE,
        node=NODE,
        seq=0,
        correlation_id=command.correlation_id,
        command="resync",
        status=AckStatus.DONE,
    )
    _publish_all(client, [(topic_for(ack), encode(ack))])
    wait_until(
        lambda: cloud_proc.query("SELECT status FROM commands") == [("done",)], 20, "ack applied"
    )
    commands.close()
    client.disconnect()
    client.loop_stop()
