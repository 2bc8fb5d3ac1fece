"""Beacon frame decoders: bleak's `AdvertisementData` dicts in, typed frames out.

Formats (all multi-byte integers big-endian, as the specs say):

- iBeacon: manufacturer data of Apple (0x004C): `02 15`, proximity UUID (16), major (u16),
  minor (u16), measured power at 1 m (int8).
- AltBeacon: manufacturer data of any company: `BE AC`, beacon id (20), reference RSSI at
  1 m (int8), manufacturer reserved (u8).
- Eddystone: service data of UUID 0xFEAA; the frame type is the high nibble of byte 0.
  UID 0x00, URL 0x10, TLM 0x20, EID 0x30. Eddystone tx power is calibrated at 0 m, which is
  the 1 m power + 41 dB.

A radio hears plenty of garbage (other vendors' data, truncated frames, reserved codes).
Decoding never raises: a bad frame is skipped and counted under a reason in `DecodeStats`.
"""

from __future__ import annotations

import struct
import uuid
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

APPLE_COMPANY_ID = 0x004C
EDDYSTONE_SERVICE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
EDDYSTONE_0M_TO_1M_DB = 41
"""Eddystone calibrates tx power at 0 m; subtract 41 dB for the 1 m figure iBeacon uses."""

_IBEACON_PREFIX = b"\x02\x15"
_IBEACON = struct.Struct(">2s16sHHb")
_ALTBEACON_CODE = b"\xbe\xac"
_ALTBEACON = struct.Struct(">2s20sbB")
_EDDYSTONE_UID = struct.Struct(">Bb10s6s")
_EDDYSTONE_URL_HEADER = struct.Struct(">BbB")
_EDDYSTONE_TLM = struct.Struct(">BBHhII")
_EDDYSTONE_EID = struct.Struct(">Bb8s")
_TLM_TEMPERATURE_UNSUPPORTED = -0x8000  # 0x8000 read as a signed 16-bit value

URL_SCHEMES: tuple[str, ...] = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS: tuple[str, ...] = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)


class DecodeError(StrEnum):
    """Why a frame that looked like a beacon was skipped."""

    IBEACON_LENGTH = "ibeacon_length"
    ALTBEACON_LENGTH = "altbeacon_length"
    EDDYSTONE_EMPTY = "eddystone_empty"
    EDDYSTONE_UNKNOWN_FRAME = "eddystone_unknown_frame"
    EDDYSTONE_UID_LENGTH = "eddystone_uid_length"
    EDDYSTONE_URL_LENGTH = "eddystone_url_length"
    EDDYSTONE_URL_SCHEME = "eddystone_url_scheme"
    EDDYSTONE_URL_CHARACTER = "eddystone_url_character"
    EDDYSTONE_TLM_LENGTH = "eddystone_tlm_length"
    EDDYSTONE_TLM_VERSION = "eddystone_tlm_version"
    EDDYSTONE_EID_LENGTH = "eddystone_eid_length"


@dataclass(frozen=True, slots=True)
class IBeacon:
    uuid: uuid.UUID
    major: int
    minor: int
    measured_power: int  # dBm at 1 m

    @property
    def key(self) -> str:
        return f"ibeacon:{self.uuid}:{self.major}:{self.minor}"


@dataclass(frozen=True, slots=True)
class AltBeacon:
    company_id: int
    beacon_id: bytes  # 20 bytes; by convention a 16-byte UUID then two u16
    reference_rssi: int  # dBm at 1 m
    mfg_reserved: int

    @property
    def key(self) -> str:
        return f"altbeacon:{self.beacon_id.hex()}"


@dataclass(frozen=True, slots=True)
class EddystoneUid:
    namespace: bytes  # 10 bytes
    instance: bytes  # 6 bytes
    tx_power_0m: int

    @property
    def tx_power_1m(self) -> int:
        return self.tx_power_0m - EDDYSTONE_0M_TO_1M_DB

    @property
    def key(self) -> str:
        return f"eddystone-uid:{self.namespace.hex()}:{self.instance.hex()}"


@dataclass(frozen=True, slots=True)
class EddystoneUrl:
    url: str
    tx_power_0m: int

    @property
    def tx_power_1m(self) -> int:
        return self.tx_power_0m - EDDYSTONE_0M_TO_1M_DB


@dataclass(frozen=True, slots=True)
class EddystoneTlm:
    version: int
    battery_mv: int | None  # None: not supported (the spec says zero it, e.g. USB powered)
    temperature_c: float | None  # None: the 0x8000 "not supported" marker
    adv_count: int
    uptime_s: float  # the frame counts 0.1 s units since power-up

    @property
    def key(self) -> None:
        return None  # telemetry, not an identity


@dataclass(frozen=True, slots=True)
class EddystoneEid:
    eid: bytes  # 8 bytes, rotates; only a resolver with the beacon's key can identify it
    tx_power_0m: int

    @property
    def tx_power_1m(self) -> int:
        return self.tx_power_0m - EDDYSTONE_0M_TO_1M_DB


Frame = IBeacon | AltBeacon | EddystoneUid | EddystoneUrl | EddystoneTlm | EddystoneEid


class Advertisement(Protocol):
    """The part of bleak's `AdvertisementData` the decoders read."""

    @property
    def manufacturer_data(self) -> dict[int, bytes]: ...

    @property
    def service_data(self) -> dict[str, bytes]: ...


class DecodeStats:
    """Counts of skipped frames per reason, and of adverts that carried no beacon at all."""

    def __init__(self) -> None:
        self.errors: Counter[DecodeError] = Counter()
        self.not_beacon = 0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


class _SkipFrameError(Exception):
    def __init__(self, reason: DecodeError) -> None:
        self.reason = reason


def decode_advertisement(adv: Advertisement, stats: DecodeStats) -> list[Frame]:
    """Every beacon frame in one advert (an advert may carry several). Never raises."""
    frames: list[Frame] = []
    for company_id, payload in adv.manufacturer_data.items():
        _collect(frames, stats, _decode_manufacturer, company_id, payload)
    eddystone = adv.service_data.get(EDDYSTONE_SERVICE_UUID)
    if eddystone is not None:
        _collect(frames, stats, _decode_eddystone_any, 0, eddystone)
    if not frames:
        stats.not_beacon += 1
    return frames


def _collect(
    frames: list[Frame],
    stats: DecodeStats,
    decoder: _Decoder,
    company_id: int,
    payload: bytes,
) -> None:
    try:
        frame = decoder(company_id, payload)
    except _SkipFrameError as skip:
        stats.errors[skip.reason] += 1
        return
    if frame is not None:
        frames.append(frame)


class _Decoder(Protocol):
    def __call__(self, company_id: int, payload: bytes, /) -> Frame | None: ...


def _decode_manufacturer(company_id: int, payload: bytes) -> Frame | None:
    if company_id == APPLE_COMPANY_ID and payload[:2] == _IBEACON_PREFIX:
        return _decode_ibeacon(payload)
    if payload[:2] == _ALTBEACON_CODE:
        return _decode_altbeacon(company_id, payload)
    return None  # some other vendor's data: not ours to judge


def _decode_ibeacon(payload: bytes) -> IBeacon:
    """`payload` is Apple's manufacturer data (bleak strips the company id)."""
    if len(payload) != _IBEACON.size:
        raise _SkipFrameError(DecodeError.IBEACON_LENGTH)
    _, raw_uuid, major, minor, power = _IBEACON.unpack(payload)
    return IBeacon(uuid.UUID(bytes=raw_uuid), major, minor, power)


def _decode_altbeacon(company_id: int, payload: bytes) -> AltBeacon:
    if len(payload) != _ALTBEACON.size:
        raise _SkipFrameError(DecodeError.ALTBEACON_LENGTH)
    _, beacon_id, reference_rssi, reserved = _ALTBEACON.unpack(payload)
    return AltBeacon(company_id, beacon_id, reference_rssi, reserved)


def _decode_eddystone_any(_company_id: int, payload: bytes) -> Frame:
    return _decode_eddystone(payload)


def _decode_eddystone(payload: bytes) -> Frame:
    """`payload` is the service data of UUID 0xFEAA."""
    if not payload:
        raise _SkipFrameError(DecodeError.EDDYSTONE_EMPTY)
    frame_type = payload[0] & 0xF0
    if frame_type == 0x00:
        return _eddystone_uid(payload)
    if frame_type == 0x10:
        return _eddystone_url(payload)
    if frame_type == 0x20:
        return _eddystone_tlm(payload)
    if frame_type == 0x30:
        return _eddystone_eid(payload)
    raise _SkipFrameError(DecodeError.EDDYSTONE_UNKNOWN_FRAME)


def _eddystone_uid(payload: bytes) -> EddystoneUid:
    # 18 bytes, plus 2 reserved bytes that many beacons leave out.
    if len(payload) not in (_EDDYSTONE_UID.size, _EDDYSTONE_UID.size + 2):
        raise _SkipFrameError(DecodeError.EDDYSTONE_UID_LENGTH)
    _, tx_power, namespace, instance = _EDDYSTONE_UID.unpack_from(payload)
    return EddystoneUid(namespace, instance, tx_power)


def _eddystone_url(payload: bytes) -> EddystoneUrl:
    # header (3) + 1..17 encoded bytes
    if not _EDDYSTONE_URL_HEADER.size < len(payload) <= _EDDYSTONE_URL_HEADER.size + 17:
        raise _SkipFrameError(DecodeError.EDDYSTONE_URL_LENGTH)
    _, tx_power, scheme = _EDDYSTONE_URL_HEADER.unpack_from(payload)
    if scheme >= len(URL_SCHEMES):
        raise _SkipFrameError(DecodeError.EDDYSTONE_URL_SCHEME)
    parts = [URL_SCHEMES[scheme]]
    for byte in payload[_EDDYSTONE_URL_HEADER.size :]:
        if byte < len(URL_EXPANSIONS):
            parts.append(URL_EXPANSIONS[byte])
        elif 0x21 <= byte <= 0x7E:  # printable ASCII; 0x0e-0x20 and 0x7f-0xff are reserved
            parts.append(chr(byte))
        else:
            raise _SkipFrameError(DecodeError.EDDYSTONE_URL_CHARACTER)
    return EddystoneUrl("".join(parts), tx_power)


def _eddystone_tlm(payload: bytes) -> EddystoneTlm:
    if len(payload) != _EDDYSTONE_TLM.size:
        raise _SkipFrameError(DecodeError.EDDYSTONE_TLM_LENGTH)
    _, version, battery, temperature, adv_count, uptime = _EDDYSTONE_TLM.unpack(payload)
    if version != 0:  # version 1 is encrypted TLM, unreadable without the beacon's key
        raise _SkipFrameError(DecodeError.EDDYSTONE_TLM_VERSION)
    return EddystoneTlm(
        version=version,
        battery_mv=battery or None,
        temperature_c=None if temperature == _TLM_TEMPERATURE_UNSUPPORTED else temperature / 256,
        adv_count=adv_count,
        uptime_s=uptime / 10,
    )


def _eddystone_eid(payload: bytes) -> EddystoneEid:
    if len(payload) != _EDDYSTONE_EID.size:
        raise _SkipFrameError(DecodeError.EDDYSTONE_EID_LENGTH)
    _, tx_power, eid = _EDDYSTONE_EID.unpack(payload)
    return EddystoneEid(eid, tx_power)
