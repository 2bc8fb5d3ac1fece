"""Decoder vectors written by hand from the iBeacon, Eddystone and AltBeacon specs."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.ble.frames import (
    EDDYSTONE_SERVICE_UUID,
    AltBeacon,
    DecodeError,
    DecodeStats,
    EddystoneEid,
    EddystoneTlm,
    EddystoneUid,
    EddystoneUrl,
    IBeacon,
    decode_advertisement,
)
from simulators.ble.adverts import bluez_advert

ADDRESS = "4C:11:22:33:44:55"


def decode(
    manufacturer: dict[int, bytes] | None = None, service: dict[str, bytes] | None = None
) -> tuple[list[object], DecodeStats]:
    _, adv = bluez_advert(
        "hci0", ADDRESS, -60, manufacturer_data=manufacturer, service_data=service
    )
    stats = DecodeStats()
    return list(decode_advertisement(adv, stats)), stats


def eddystone(hex_payload: str) -> tuple[list[object], DecodeStats]:
    return decode(service={EDDYSTONE_SERVICE_UUID: bytes.fromhex(hex_payload)})


def test_ibeacon() -> None:
    payload = bytes.fromhex("0215f7826da64fa24e988024bc5b71e0893e00010102c5")
    frames, stats = decode({0x004C: payload})
    assert frames == [IBeacon(uuid.UUID("f7826da6-4fa2-4e98-8024-bc5b71e0893e"), 1, 0x0102, -59)]
    assert stats.error_total == 0


def test_ibeacon_max_major_minor_and_positive_power() -> None:
    payload = bytes.fromhex("0215" + "00" * 16 + "fffffffe05")
    frames, _ = decode({0x004C: payload})
    assert frames == [IBeacon(uuid.UUID(int=0), 65535, 65534, 5)]


def test_altbeacon() -> None:
    beacon_id = bytes.fromhex("5f2dd896b8864549ae01e41acd7a354a00070009")
    frames, _ = decode({0x0118: bytes.fromhex("beac") + beacon_id + bytes.fromhex("c32a")})
    assert frames == [AltBeacon(0x0118, beacon_id, -61, 0x2A)]


def test_eddystone_uid_with_and_without_reserved_bytes() -> None:
    body = "00eeedd1ebeac04e5defa0170123456789ab"
    for payload in (body, body + "0000"):
        frames, stats = eddystone(payload)
        expected = EddystoneUid(
            bytes.fromhex("edd1ebeac04e5defa017"), bytes.fromhex("0123456789ab"), -18
        )
        assert frames == [expected]
        assert stats.error_total == 0
    assert expected.tx_power_1m == -59  # 0 m reference minus 41 dB


def test_eddystone_url() -> None:
    # http://www. + "google" + .com
    frames, _ = eddystone("10ec00676f6f676c6507")
    assert frames == [EddystoneUrl("http://www.google.com", -20)]
    assert isinstance(frames[0], EddystoneUrl)
    assert frames[0].tx_power_1m == -61


@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [(0x00, "http://www."), (0x01, "https://www."), (0x02, "http://"), (0x03, "https://")],
)
def test_every_url_scheme(scheme: int, prefix: str) -> None:
    frames, _ = eddystone(f"10 00 {scheme:02x} 61".replace(" ", ""))
    assert frames == [EddystoneUrl(prefix + "a", 0)]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0x00, ".com/"),
        (0x01, ".org/"),
        (0x02, ".edu/"),
        (0x03, ".net/"),
        (0x04, ".info/"),
        (0x05, ".biz/"),
        (0x06, ".gov/"),
        (0x07, ".com"),
        (0x08, ".org"),
        (0x09, ".edu"),
        (0x0A, ".net"),
        (0x0B, ".info"),
        (0x0C, ".biz"),
        (0x0D, ".gov"),
    ],
)
def test_every_url_expansion(code: int, text: str) -> None:
    # https:// + "shop" + expansion + "x"
    frames, _ = eddystone(f"10f50373686f70{code:02x}78")
    assert frames == [EddystoneUrl(f"https://shop{text}x", -11)]


def test_eddystone_tlm_negative_temperature() -> None:
    # version 0, 3000 mV, 0xFE80 = -1.5 C in signed 8.8, 100 adverts, 3600 x 0.1 s
    frames, _ = eddystone("20000bb8fe800000006400000e10")
    assert frames == [EddystoneTlm(0, 3000, -1.5, 100, 360.0)]


def test_eddystone_tlm_fractional_temperatures() -> None:
    frames, _ = eddystone("20000c1c19800000000100000001")
    assert isinstance(frames[0], EddystoneTlm)
    assert frames[0].temperature_c == 25.5
    frames, _ = eddystone("20000c1cffc00000000100000001")
    assert isinstance(frames[0], EddystoneTlm)
    assert frames[0].temperature_c == -0.25


def test_eddystone_tlm_unsupported_markers() -> None:
    # temperature 0x8000 = not supported (not -128 C), battery 0 = not supported (USB power)
    frames, _ = eddystone("200000008000ffffffff00000000")
    assert frames == [EddystoneTlm(0, None, None, 0xFFFFFFFF, 0.0)]


def test_eddystone_eid() -> None:
    frames, _ = eddystone("30f00102030405060708")
    assert frames == [EddystoneEid(bytes.fromhex("0102030405060708"), -16)]


def test_one_advert_can_carry_several_frames() -> None:
    ibeacon = bytes.fromhex("0215" + "11" * 16 + "00010002c5")
    frames, _ = decode(
        {0x004C: ibeacon}, {EDDYSTONE_SERVICE_UUID: bytes.fromhex("30f00102030405060708")}
    )
    assert [type(f) for f in frames] == [IBeacon, EddystoneEid]


@pytest.mark.parametrize(
    ("manufacturer", "service", "reason"),
    [
        ({0x004C: bytes.fromhex("0215" + "00" * 10)}, None, DecodeError.IBEACON_LENGTH),
        ({0x004C: bytes.fromhex("0215" + "00" * 22)}, None, DecodeError.IBEACON_LENGTH),
        ({0x0118: bytes.fromhex("beac" + "00" * 10)}, None, DecodeError.ALTBEACON_LENGTH),
        (None, "", DecodeError.EDDYSTONE_EMPTY),
        (None, "40" + "00" * 17, DecodeError.EDDYSTONE_UNKNOWN_FRAME),
        (None, "00ee0102", DecodeError.EDDYSTONE_UID_LENGTH),
        (None, "10ec", DecodeError.EDDYSTONE_URL_LENGTH),
        (None, "10ec00" + "61" * 18, DecodeError.EDDYSTONE_URL_LENGTH),
        (None, "10ec0461", DecodeError.EDDYSTONE_URL_SCHEME),
        (None, "10ec00610e", DecodeError.EDDYSTONE_URL_CHARACTER),
        (None, "10ec0061ff", DecodeError.EDDYSTONE_URL_CHARACTER),
        (None, "10ec006120", DecodeError.EDDYSTONE_URL_CHARACTER),
        (None, "20000bb8fe800000006400000e", DecodeError.EDDYSTONE_TLM_LENGTH),
        (None, "2001" + "00" * 12, DecodeError.EDDYSTONE_TLM_VERSION),
        (None, "30f001020304050607", DecodeError.EDDYSTONE_EID_LENGTH),
    ],
)
def test_bad_frames_are_counted_not_raised(
    manufacturer: dict[int, bytes] | None, service: str | None, reason: DecodeError
) -> None:
    service_data = None if service is None else {EDDYSTONE_SERVICE_UUID: bytes.fromhex(service)}
    frames, stats = decode(manufacturer, service_data)
    assert frames == []
    assert stats.errors == {reason: 1}


def test_other_vendor_data_is_not_an_error() -> None:
    # Apple Nearby (0x10) and a Microsoft CDP frame: not beacons, not errors either
    frames, stats = decode({0x004C: bytes.fromhex("1005031c8a2b3c"), 0x0006: b"\x01\x09\x20"})
    assert frames == []
    assert stats.error_total == 0
    assert stats.not_beacon == 1


def test_good_frame_survives_a_bad_neighbour() -> None:
    good = bytes.fromhex("0215" + "22" * 16 + "00030004c5")
    frames, stats = decode({0x004C: good}, {EDDYSTONE_SERVICE_UUID: b"\x20\x00"})
    assert len(frames) == 1
    assert stats.errors == {DecodeError.EDDYSTONE_TLM_LENGTH: 1}


@given(
    manufacturer=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=40), max_size=3),
    eddystone_payload=st.one_of(st.none(), st.binary(max_size=30)),
    prefix=st.sampled_from([b"", b"\x02\x15", b"\xbe\xac", b"\x10", b"\x20\x00"]),
)
def test_random_bytes_never_raise(
    manufacturer: dict[int, bytes], eddystone_payload: bytes | None, prefix: bytes
) -> None:
    manufacturer = {k: prefix + v for k, v in manufacturer.items()}
    service = (
        None if eddystone_payload is None else {EDDYSTONE_SERVICE_UUID: prefix + eddystone_payload}
    )
    frames, stats = decode(manufacturer, service)
    assert len(frames) + stats.error_total + stats.not_beacon >= 1
