from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.ids import IDENTIFIER_PATTERN
from protocols.topics import (
    Channel,
    NodeTopic,
    ShopperTopic,
    TopicError,
    command_topic,
    node_filter,
    offers_topic,
    parse_topic,
)

identifiers = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True).filter(lambda s: s != "shopper")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("storegate/v1/s1/n1/status", NodeTopic("s1", "n1", Channel.STATUS)),
        ("storegate/v1/s1/n1/health", NodeTopic("s1", "n1", Channel.HEALTH)),
        ("storegate/v1/s1/n1/rfid/reader-1", NodeTopic("s1", "n1", Channel.RFID, "reader-1")),
        ("storegate/v1/s1/n1/locker/bank_a", NodeTopic("s1", "n1", Channel.LOCKER, "bank_a")),
        ("storegate/v1/s1/n1/ble/scan.1", NodeTopic("s1", "n1", Channel.BLE, "scan.1")),
        ("storegate/v1/s1/n1/cmd/resync", NodeTopic("s1", "n1", Channel.CMD, "resync")),
        ("storegate/v1/s1/n1/ack", NodeTopic("s1", "n1", Channel.ACK)),
        ("storegate/v1/shopper/tok1/offers", ShopperTopic("tok1")),
        ("storegate/v1/shopper/tok1/orders", ShopperTopic("tok1", Channel.ORDERS)),
    ],
)
def test_parse_known_topics(topic: str, expected: object) -> None:
    assert parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("other/v1/s1/n1/status", "not under storegate/v1/"),
        ("storegate/v2/s1/n1/status", "unsupported topic version 'v2'"),
        ("storegate/v1/s1/n1/bogus", "unknown channel 'bogus'"),
        ("storegate/v1/s1/n1/rfid", "channel rfid takes 6 levels"),
        ("storegate/v1/s1/n1/health/x", "channel health takes 5 levels"),
        ("storegate/v1/s1/n+/status", "node 'n+' must be"),
        ("storegate/v1/s1//status", "node '' must be"),
        ("storegate/v1/shopper/n1/status", "shopper topics are shopper/{inbox}/offers"),
        ("storegate/v1/s1", "not under storegate/v1/"),
    ],
)
def test_malformed_topics_are_typed_errors(topic: str, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(topic)
    assert reason in info.value.reason
    assert info.value.topic == topic


def test_building_a_topic_validates_its_levels() -> None:
    with pytest.raises(TopicError, match="needs a device level"):
        NodeTopic("s1", "n1", Channel.RFID)
    with pytest.raises(TopicError, match="has no device level"):
        NodeTopic("s1", "n1", Channel.STATUS, "x")
    with pytest.raises(TopicError, match="reserved"):
        NodeTopic("shopper", "n1", Channel.STATUS)
    with pytest.raises(TopicError):
        command_topic("s1", "n1", "a/b")
    assert offers_topic("t1") == "storegate/v1/shopper/t1/offers"


def test_filters() -> None:
    assert node_filter() == "storegate/v1/+/+/#"
    assert node_filter("s1", "n1", Channel.CMD) == "storegate/v1/s1/n1/cmd/+"
    assert node_filter(shared_group="ingest") == "$share/ingest/storegate/v1/+/+/#"


@given(
    store=identifiers,
    node=identifiers,
    channel=st.sampled_from([c for c in Channel if not c.to_shopper]),
    device=identifiers,
)
def test_build_parse_round_trip(store: str, node: str, channel: Channel, device: str) -> None:
    topic = NodeTopic(store, node, channel, device if channel.has_device else None)
    assert parse_topic(str(topic)) == topic


@given(st.text(max_size=120))
def test_random_topics_parse_or_raise_topic_error(topic: str) -> None:
    with contextlib.suppress(TopicError):
        parse_topic(topic)
