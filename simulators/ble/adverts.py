"""Beacon frames as bytes, and bleak's own objects around them, built the way bleak's BlueZ
backend builds them (D-Bus object path and Device1 properties in `details` and
`platform_data`)."""

from __future__ import annotations

import random
import struct
import uuid
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

APPLE = 0x004C


def ibeacon_payload(proximity: uuid.UUID, major: int, minor: int, measured_power: int) -> bytes:
    """Apple manufacturer data of an iBeacon (without the company id, as bleak gives it)."""
    return b"\x02\x15" + proximity.bytes + struct.pack(">HHb", major, minor, measured_power)


def altbeacon_payload(beacon_id: bytes, reference_rssi: int, reserved: int = 0) -> bytes:
    return b"\xbe\xac" + beacon_id + struct.pack(">bB", reference_rssi, reserved)


def random_private_address(rng: random.Random) -> str:
    """A resolvable-private-style random address, as phones use (top bits 01)."""
    first = (rng.randrange(256) & 0x3F) | 0x40
    rest = [rng.randrange(256) for _ in range(5)]
    return ":".join(f"{b:02X}" for b in [first, *rest])


def bluez_advert(
    adapter: str,
    address: str,
    rssi: int,
    *,
    manufacturer_data: dict[int, bytes] | None = None,
    service_data: dict[str, bytes] | None = None,
    service_uuids: list[str] | None = None,
    local_name: str | None = None,
    tx_power: int | None = None,
) -> tuple[BLEDevice, AdvertisementData]:
    path = f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"
    props: dict[str, Any] = {
        "Address": address,
        "AddressType": "random",
        "Alias": local_name or address.replace(":", "-"),
        "Adapter": f"/org/bluez/{adapter}",
        "RSSI": rssi,
        "ManufacturerData": dict(manufacturer_data or {}),
        "ServiceData": dict(service_data or {}),
        "UUIDs": list(service_uuids or []),
    }
    if local_name is not None:
        props["Name"] = local_name
    if tx_power is not None:
        props["TxPower"] = tx_power
    adv = AdvertisementData(
        local_name=local_name,
        manufacturer_data=dict(manufacturer_data or {}),
        service_data=dict(service_data or {}),
        service_uuids=list(service_uuids or []),
        tx_power=tx_power,
        rssi=rssi,
        platform_data=(path, props),
    )
    device = BLEDevice(address, local_name, {"path": path, "props": props})
    return device, adv
