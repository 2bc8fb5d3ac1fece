"""Every integer and timestamp of the contract is bounded by what the stores can hold.

A number the models accepted but the state store could not (a seq of 2**63 for a BIGINT
column) used to fail the whole batch in the database, where it looked like an outage. Here
each bound is checked at the exact limit and one past it, against limits written out in
this file, not taken from the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from protocols.asyncapi import standalone_json_schemas
from protocols.codec import DecodeError, DecodeErrorReason, decode, encode, topic_for
from protocols.messages import MESSAGE_CLASSES, Message
from tests.samples import all_samples

BIGINT_MAX = 9_223_372_036_854_775_807  # PostgreSQL BIGINT, SQLite INTEGER, InfluxDB integer
INTEGER_MAX = 2_147_483_647  # PostgreSQL INTEGER: the inventory's count column

# (message type, dotted path into its JSON, smallest valid, largest valid)
BOUNDS: list[tuple[str, str, int, int]] = [
    *[(cls.model_fields["type"].default, "seq", 0, BIGINT_MAX) for cls in MESSAGE_CLASSES],
    *[(t, "bd_seq", 0, BIGINT_MAX) for t in ("status", "birth", "death", "health")],
    ("birth", "streams.0.seq", 0, BIGINT_MAX),
    ("birth", "streams.0.kept_from", 0, BIGINT_MAX),
    ("birth", "streams.0.dropped.0.first", 0, BIGINT_MAX),
    ("birth", "streams.0.dropped.0.last", 0, BIGINT_MAX),
    ("committed", "streams.0.seq", 0, BIGINT_MAX),
    ("birth", "shelves.0.count", 0, INTEGER_MAX),
    ("birth", "part", 1, BIGINT_MAX),
    ("birth", "parts", 1, BIGINT_MAX),
    ("health", "rss_bytes", 0, BIGINT_MAX),
    ("health", "disk_free_bytes", 0, BIGINT_MAX),
    ("health", "outbox.depth", 0, BIGINT_MAX),
    ("health", "outbox.bytes", 0, BIGINT_MAX),
    ("health", "outbox.capacity_bytes", 0, BIGINT_MAX),
    ("health", "outbox.dropped.expired", 0, BIGINT_MAX),
    ("health", "drivers.0.restarts", 0, BIGINT_MAX),
    ("rfid.events", "counts.0.delta", -INTEGER_MAX, INTEGER_MAX),
    ("rfid.events", "counts.0.count", 0, INTEGER_MAX),
    ("rfid.snapshot", "shelves.0.count", 0, INTEGER_MAX),
    ("rfid.snapshot", "part", 1, BIGINT_MAX),
    ("rfid.snapshot", "parts", 1, BIGINT_MAX),
]

SAMPLES = {message.type: message for message in all_samples()}


def with_value(message: Message, path: str, value: Any) -> tuple[str, bytes]:
    data = json.loads(encode(message))
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return topic_for(message), json.dumps(data).encode()


def _integer_paths(schema: dict[str, Any], defs: dict[str, Any], path: str) -> Iterator[str]:
    if "$ref" in schema:
        yield from _integer_paths(defs[schema["$ref"].rsplit("/", 1)[1]], defs, path)
        return
    for option in schema.get("anyOf", []):
        yield from _integer_paths(option, defs, path)
    if schema.get("type") == "integer" and "const" not in schema and "enum" not in schema:
        assert schema.get("maximum", 2**64) <= BIGINT_MAX, path  # bounded in the schema too
        assert schema.get("minimum", -(2**64)) >= -BIGINT_MAX - 1, path
        yield path
    for name, sub in schema.get("properties", {}).items():
        yield from _integer_paths(sub, defs, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from _integer_paths(schema["items"], defs, f"{path}.0")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _integer_paths(schema["additionalProperties"], defs, f"{path}.*")


def test_every_integer_of_the_contract_is_bounded_and_listed_here() -> None:
    listed = {(t, p.replace("dropped.expired", "dropped.*")) for t, p, _lo, _hi in BOUNDS}
    found = set()
    for name, schema in standalone_json_schemas().items():
        type_name = name.removesuffix(".json")
        defs = schema.get("$defs", {})
        for path in _integer_paths(schema, defs, ""):
            found.add((type_name, path))
    assert found == listed, "an integer field without a bound (or a bound not tested here)"


@pytest.mark.parametrize(("type_name", "path", "low", "high"), BOUNDS, ids=lambda v: str(v))
def test_integer_bounds_hold_exactly(type_name: str, path: str, low: int, high: int) -> None:
    sample = SAMPLES[type_name]
    for value in (low, high):
        topic, payload = with_value(sample, path, value)
        node: Any = json.loads(encode(decode(payload, topic=topic)))
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert node == value
    for value in (low - 1, high + 1, -(2**63), 2**63, 2**64, -(2**64) - 1, 10**40):
        if low <= value <= high:
            continue
        topic, payload = with_value(sample, path, value)
        with pytest.raises(DecodeError) as caught:
            decode(payload, topic=topic)
        assert caught.value.reason is DecodeErrorReason.INVALID, (path, value)
        assert path.split(".")[0] in caught.value.detail, caught.value.detail


@pytest.mark.parametrize(
    "moment",
    [
        "1677-09-21T00:12:43Z",  # a second before the earliest nanosecond timestamp in 64 bits
        "2262-04-11T23:47:17Z",  # and after the latest
        "0001-01-01T00:00:00+05:00",  # before year 1 in UTC: Python overflows converting it
        "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
        9_223_372_036_854_775_807,  # as a unix timestamp
        -(2**63),
    ],
)
def test_timestamps_out_of_the_history_range_are_invalid(moment: str | int) -> None:
    sample = SAMPLES["rfid.events"]
    for path in ("event_time", "sent_time", "items.0.at"):
        topic, payload = with_value(sample, path, moment)
        with pytest.raises(DecodeError) as caught:
            decode(payload, topic=topic)
        assert caught.value.reason is DecodeErrorReason.INVALID
        assert path.split(".")[0] in caught.value.detail


@pytest.mark.parametrize(
    "moment", ["1677-09-21T00:12:44Z", "2262-04-11T23:47:15Z", "1970-01-01T00:00:00Z"]
)
def test_timestamps_at_the_ends_of_the_range_are_valid(moment: str) -> None:
    sample = SAMPLES["rfid.events"]
    topic, payload = with_value(sample, "event_time", moment)
    assert decode(payload, topic=topic).event_time.isoformat().startswith(moment[:19])


def test_versions_fit_the_node_row() -> None:
    for type_name in ("status", "birth", "health"):
        topic, payload = with_value(SAMPLES[type_name], "version", "v" * 64)
        decode(payload, topic=topic)
        topic, payload = with_value(SAMPLES[type_name], "version", "v" * 65)
        with pytest.raises(DecodeError, match="version"):
            decode(payload, topic=topic)


@pytest.mark.parametrize(
    ("type_name", "path", "value"),
    [
        ("rfid.events", "seq", 2**63),
        ("rfid.events", "counts.0.count", -1),
        ("health", "outbox.dropped.expired", 2**64),
        ("birth", "version", "v" * 65),
        ("status", "bd_seq", "seven"),
        ("rfid.events", "v", 2),  # not `invalid`: the version, which the slow path names
    ],
)
def test_the_fast_refusal_says_what_the_full_diagnosis_says(
    type_name: str, path: str, value: Any
) -> None:
    from protocols.codec import _diagnose

    _topic, payload = with_value(SAMPLES[type_name], path, value)
    with pytest.raises(DecodeError) as fast:
        decode(payload)
    with pytest.raises(DecodeError) as slow:
        _diagnose(payload, expect=None)
    assert (fast.value.reason, fast.value.detail) == (slow.value.reason, slow.value.detail)
