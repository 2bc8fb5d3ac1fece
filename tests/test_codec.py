from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import DecodeError, DecodeErrorReason, EncodeError, decode, encode, topic_for
from protocols.codec import decode_as
from protocols.messages import MESSAGE_CLASSES, MESSAGE_TYPES, Message, RfidEvents, Status
from tests.samples import all_samples

SAMPLES = all_samples()


def _payload(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(encode(message))
    return result


def test_samples_cover_every_message_type() -> None:
    assert {type(m) for m in SAMPLES} == set(MESSAGE_CLASSES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type)
def test_encode_decode_round_trip(message: Message) -> None:
    payload = encode(message)
    assert decode(payload, topic=topic_for(message)) == message
    assert decode_as(type(message), payload) == message


def test_envelope_is_complete_and_utc() -> None:
    data = _payload(SAMPLES[4])
    for field in ("v", "type", "msg_id", "store", "node", "stream", "seq"):
        assert field in data
    assert data["event_time"].endswith("Z")
    assert data["sent_time"].endswith("Z")
    assert data["stream"] == "rfid/reader-1"


def test_non_utc_timestamps_are_normalised_and_naive_ones_rejected() -> None:
    data = _payload(SAMPLES[0])
    data["event_time"] = "2026-11-23T10:30:00+01:00"
    message = decode(json.dumps(data).encode())
    assert message.event_time.isoformat() == "2026-11-23T09:30:00+00:00"
    data["event_time"] = "2026-11-23T10:30:00"
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(data).encode())
    assert info.value.reason is DecodeErrorReason.INVALID
    assert "event_time" in info.value.detail


def _mutated(mutate: Any) -> bytes:
    data = _payload(SAMPLES[4])
    mutate(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"\xff\xfe\x00garbage", DecodeErrorReason.NOT_JSON, ""),
        (b'{"v": 1, "type": ', DecodeErrorReason.NOT_JSON, ""),
        (b"[1, 2]", DecodeErrorReason.NOT_AN_OBJECT, "an array"),
        (b'"status"', DecodeErrorReason.NOT_AN_OBJECT, "a string"),
        (_mutated(lambda d: d.update(v=2)), DecodeErrorReason.UNSUPPORTED_VERSION, "version 2"),
        (_mutated(lambda d: d.update(v=True)), DecodeErrorReason.UNSUPPORTED_VERSION, "True"),
        (_mutated(lambda d: d.pop("v")), DecodeErrorReason.INVALID, "v: missing"),
        (_mutated(lambda d: d.update(type="nope")), DecodeErrorReason.UNKNOWN_TYPE, "'nope'"),
        (_mutated(lambda d: d.pop("type")), DecodeErrorReason.INVALID, "type: missing"),
        (_mutated(lambda d: d.pop("seq")), DecodeErrorReason.INVALID, "seq: Field required"),
        (_mutated(lambda d: d.update(seq=-1)), DecodeErrorReason.INVALID, "seq: Input should be"),
        (_mutated(lambda d: d.update(store="a/b")), DecodeErrorReason.INVALID, "store"),
        (_mutated(lambda d: d.update(stream="rfid/x")), DecodeErrorReason.INVALID, "stream"),
        (
            _mutated(lambda d: d["items"][0].update(epc="zz")),
            DecodeErrorReason.INVALID,
            "items.0.epc",
        ),
        (
            _mutated(lambda d: d["items"][0].update(gtin="123")),
            DecodeErrorReason.INVALID,
            "items.0.gtin",
        ),
        (b"{" + b" " * 300_000 + b"}", DecodeErrorReason.TOO_LARGE, "limit is 262144"),
    ],
)
def test_bad_payloads_give_typed_errors(
    payload: bytes, reason: DecodeErrorReason, detail: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload)
    assert info.value.reason is reason
    assert detail in info.value.detail


def test_topic_must_match_payload() -> None:
    message = SAMPLES[4]
    payload = encode(message)
    with pytest.raises(DecodeError) as info:
        decode(payload, topic="storegate/v1/store-042/forged-node/rfid/reader-1")
    assert info.value.reason is DecodeErrorReason.TOPIC_MISMATCH
    assert "forged-node" in info.value.detail
    with pytest.raises(DecodeError) as info:
        decode(payload, topic="storegate/v1/store-042/pi-front/rfid/reader-2")
    assert info.value.reason is DecodeErrorReason.TOPIC_MISMATCH
    with pytest.raises(DecodeError) as info:
        decode(payload, topic="storegate/v1/store-042/pi-front/health")
    assert info.value.reason is DecodeErrorReason.TOPIC_MISMATCH
    with pytest.raises(DecodeError) as info:
        decode(payload, topic="storegate/v1/store-042/pi-front/nope")
    assert info.value.reason is DecodeErrorReason.BAD_TOPIC


def test_expecting_one_type() -> None:
    with pytest.raises(DecodeError) as info:
        decode_as(Status, encode(SAMPLES[4]))
    assert "expected a status message, got rfid.events" in info.value.detail


def test_mac_addresses_are_refused_as_beacon_ids() -> None:
    data = _payload(SAMPLES[8])
    data["events"][0]["beacon"] = "AA:BB:CC:DD:EE:FF"
    with pytest.raises(DecodeError, match="MAC address"):
        decode(json.dumps(data).encode())
    with pytest.raises(ValueError, match="MAC address"):
        type(SAMPLES[8]).model_validate({**data, "events": [data["events"][0]]})


def test_oversized_message_cannot_be_encoded() -> None:
    message = SAMPLES[4]
    with pytest.raises(EncodeError, match="split it into smaller batches"):
        encode(message, max_bytes=100)


def test_rfid_events_stream_is_filled_from_reader() -> None:
    message = RfidEvents(store="s", node="n", seq=0, reader="r9")
    assert message.stream == "rfid/r9"
    assert topic_for(message) == "storegate/v1/s/n/rfid/r9"


# ----------------------------------------------------------------------------- properties

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_give_a_typed_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    data=st.data(),
    replacement=JSON_VALUES,
    action=st.sampled_from(["replace", "delete", "truncate", "flip"]),
)
def test_mutated_valid_payloads_decode_or_give_a_typed_error(
    sample: Message, data: st.DataObject, replacement: Any, action: str
) -> None:
    payload = _payload(sample)
    raw = json.dumps(payload).encode()
    if action == "truncate":
        cut = data.draw(st.integers(0, len(raw) - 1))
        mutated = raw[:cut]
    elif action == "flip":
        index = data.draw(st.integers(0, len(raw) - 1))
        mutated = (
            raw[:index] + bytes([raw[index] ^ data.draw(st.integers(1, 255))]) + raw[index + 1 :]
        )
    else:
        path = data.draw(st.sampled_from(_paths(payload)))
        parent: Any = payload
        for key in path[:-1]:
            parent = parent[key]
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        mutated = json.dumps(payload).encode()
    try:
        message = decode(mutated)
    except DecodeError as exc:
        error = exc
    else:
        # A mutation that still decodes must give a valid message of a known type.
        assert message.type in MESSAGE_TYPES
        assert decode(encode(message)) == message
        return
    assert error.reason in DecodeErrorReason
    assert error.detail
