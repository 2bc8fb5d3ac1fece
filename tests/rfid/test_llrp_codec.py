"""The LLRP codec against real reader captures (shared fixtures) and bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.llrp import (
    LLRPError,
    RawParam,
    decode_body,
    decode_message,
    encode_body,
    encode_message,
    message,
    param,
    view,
)
from protocols.llrp.spec import MESSAGE_NAMES
from tests.conftest import FIXTURES as FIXTURE_ROOT

LLRP_FIXTURES = FIXTURE_ROOT / "llrp"
# fixture file stem -> LLRP message name (the .bytes hold the body only, no header)
FIXTURE_MESSAGES = {
    "CloseConnectionResponse": "CLOSE_CONNECTION_RESPONSE",
    "GetAccessSpecsResponse": "GET_ACCESSSPECS_RESPONSE",
    "GetROSpecsResponse": "GET_ROSPECS_RESPONSE",
    "GetReaderCapabilitiesResponse": "GET_READER_CAPABILITIES_RESPONSE",
    "GetReaderConfigResponse": "GET_READER_CONFIG_RESPONSE",
    "ROAccessReport": "RO_ACCESS_REPORT",
    "ReaderEventNotification": "READER_EVENT_NOTIFICATION",
}
FIXTURES = sorted(LLRP_FIXTURES.glob("*.bytes"))


def _is_zero(value: Any) -> bool:
    """A Go zero value: what the fixtures' decoder shows for an absent optional part."""
    if isinstance(value, dict):
        return all(_is_zero(v) for v in value.values()) and bool(value)
    return value in (None, 0, False, "")


def assert_matches(actual: Any, expected: Any, path: str = "") -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected.keys() | actual.keys():
            where = f"{path}.{key}"
            if key not in actual:
                assert _is_zero(expected[key]), f"{where} missing, expected {expected[key]!r}"
            elif key not in expected:
                assert _is_zero(actual[key]), f"{where} unexpected: {actual[key]!r}"
            else:
                assert_matches(actual[key], expected[key], where)
    elif isinstance(expected, list) and isinstance(actual, list):
        assert len(actual) == len(expected), (
            f"{path}: {len(actual)} items, expected {len(expected)}"
        )
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_every_fixture_is_covered() -> None:
    assert len(FIXTURES) >= 12
    for path in FIXTURES:
        assert path.stem.rsplit("-", 1)[0] in FIXTURE_MESSAGES, path.name


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_decodes_to_its_json_and_reencodes_byte_for_byte(path: Path) -> None:
    body = path.read_bytes()
    name = FIXTURE_MESSAGES[path.stem.rsplit("-", 1)[0]]
    decoded = decode_body(MESSAGE_NAMES[name], body, 42)
    assert decoded.name == name
    assert decoded.known
    assert not any(isinstance(c, RawParam) for c in decoded.children)
    assert_matches(view(decoded), json.loads(path.with_suffix(".json").read_text()))
    assert encode_body(decoded) == body
    # and as a whole framed message
    framed = encode_message(decoded)
    assert struct.unpack(">HII", framed[:10]) == ((1 << 10) | decoded.type, len(framed), 42)
    assert decode_message(framed) == decoded


def test_report_fields_are_reachable_by_name() -> None:
    body = (LLRP_FIXTURES / "ROAccessReport-001.bytes").read_bytes()
    report = decode_body(MESSAGE_NAMES["RO_ACCESS_REPORT"], body)
    tag = report.child("TagReportData")
    assert tag is not None
    epc = tag.child("EPC96")
    assert epc is not None
    assert epc.fields["EPC"].hex() == "3000abcdef00000000000003"
    assert tag.value("AntennaID") == 1
    assert tag.value("PeakRSSI") == -48
    assert tag.value("FirstSeenUTC") == 1594174805140192
    assert tag.value("TagSeenCount") is None


def test_capabilities_values() -> None:
    body = (LLRP_FIXTURES / "GetReaderCapabilitiesResponse-000.bytes").read_bytes()
    caps = decode_body(MESSAGE_NAMES["GET_READER_CAPABILITIES_RESPONSE"], body)
    general = caps.child("GeneralDeviceCapabilities")
    assert general is not None
    assert general.fields["DeviceManufacturer"] == 25882  # Impinj
    assert general.fields["FirmwareVersion"] == "5.14.0.240"


def test_unknown_parameters_and_messages_survive_as_raw_bytes() -> None:
    vendor = struct.pack(">HH", 500, 8) + b"\xde\xad\xbe\xef"  # a TLV type we do not know
    custom = param("Custom", VendorID=25882, Subtype=50, Data=b"\x00\x01\x02")
    tag = param("TagReportData", param("EPC96", EPC=bytes(12)), param("AntennaID", Value=3))
    body = encode_body(message("RO_ACCESS_REPORT", 1, tag, custom)) + vendor
    decoded = decode_body(61, body)
    assert decoded.children[-1] == RawParam(500, vendor)
    assert encode_body(decoded) == body
    unknown = decode_body(999, b"\x01\x02\x03")
    assert not unknown.known
    assert encode_body(unknown) == b"\x01\x02\x03"


def test_nonzero_reserved_bits_are_kept() -> None:
    body = encode_body(message("SET_READER_CONFIG", 1, ResetToFactoryDefaults=True))
    tweaked = bytes([body[0] | 0x05]) + body[1:]
    decoded = decode_body(MESSAGE_NAMES["SET_READER_CONFIG"], tweaked)
    assert decoded.fields["ResetToFactoryDefaults"] is True
    assert encode_body(decoded) == tweaked


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (struct.pack(">HH", 240, 2), "bad length"),
        (struct.pack(">HH", 240, 40), "bad length"),
        (b"\x81\x00", "runs past"),
        (b"\xff\x00\x00", "unknown TV"),
        (struct.pack(">HH", 287, 8) + b"\x00\x00\x00\x09", "runs past"),
    ],
)
def test_malformed_bodies_raise_llrp_error_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(LLRPError, match=reason):
        decode_body(61 if body[:2] != struct.pack(">H", 287) else 4, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(MESSAGE_NAMES.values())), st.binary(max_size=64))
def test_fuzzed_bodies_decode_or_raise_llrp_error(type_: int, body: bytes) -> None:
    try:
        decoded = decode_body(type_, body)
    except LLRPError:
        return
    assert encode_body(decoded) == body
