"""Which beacons may leave the edge, and under which id.

A phone's MAC address is personal data (phones rotate it about every 15 minutes to stay
anonymous), so it is never an identity here: it is not stored, logged, counted per device
or published. Only two kinds of beacon get an id:

- the loyalty app's phones: an iBeacon (or AltBeacon) with one of the app's proximity UUIDs.
  The app rotates major/minor; together they are the shopper's rotating token, published as
  `app:<token>` and resolved in the cloud only for shoppers who opted in;
- fixed beacons listed in the config (shelf tags, reference beacons), by frame key.

Every other frame is dropped right after decoding and only counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge.ble.frames import AltBeacon, Frame, IBeacon
from protocols.ids import contains_mac_address, is_identifier

APP_PREFIX = "app:"


def app_token(major: int, minor: int) -> str:
    """The rotating token the app advertises, as 8 hex digits (major then minor)."""
    return f"{major:04x}{minor:04x}"


@dataclass(slots=True)
class Allowlist:
    app_uuids: frozenset[uuid.UUID] = frozenset()
    fixed: Mapping[str, str] = field(default_factory=dict)  # frame key -> published beacon id

    @classmethod
    def build(cls, app_uuids: Iterable[uuid.UUID], fixed: Mapping[str, str]) -> Allowlist:
        for beacon_id in fixed.values():
            # Only the published id is checked: the frame key is matched here and never
            # leaves the edge, and an Eddystone-UID key's instance is 12 hex digits by
            # definition (which the guard takes for a bare MAC).
            if contains_mac_address(beacon_id):
                raise ValueError(f"fixed beacon {beacon_id!r}: ids must not contain a MAC")
            if not beacon_id or not all(c.isalnum() or c in ":._-" for c in beacon_id):
                raise ValueError(
                    f"fixed beacon id {beacon_id!r} has characters outside [A-Za-z0-9:._-]"
                )
        return cls(frozenset(app_uuids), dict(fixed))

    def beacon_id(self, frame: Frame) -> str | None:
        """The id this frame may be published under, or None to drop it."""
        if isinstance(frame, IBeacon) and frame.uuid in self.app_uuids:
            return APP_PREFIX + app_token(frame.major, frame.minor)
        if isinstance(frame, AltBeacon) and len(frame.beacon_id) == 20:
            app = uuid.UUID(bytes=frame.beacon_id[:16])
            if app in self.app_uuids:
                major = int.from_bytes(frame.beacon_id[16:18], "big")
                minor = int.from_bytes(frame.beacon_id[18:20], "big")
                return APP_PREFIX + app_token(major, minor)
        key = getattr(frame, "key", None)
        if key is None:
            return None
        return self.fixed.get(key)


def is_app_beacon(beacon_id: str) -> bool:
    return beacon_id.startswith(APP_PREFIX) and is_identifier(beacon_id[len(APP_PREFIX) :])
