"""Only allowlisted ids leave the edge; MAC addresses never appear anywhere."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from pydantic import ValidationError

from edge.ble.frames import AltBeacon, EddystoneTlm, EddystoneUid, IBeacon
from edge.ble.options import AllowlistOptions, BleakOptions
from edge.ble.privacy import Allowlist
from edge.drivers.base import DriverSnapshot
from protocols.codec import decode
from protocols.ids import contains_mac_address
from protocols.messages import BlePresence, PresenceEvent
from simulators.ble.driver import SimBleDriver, SimBleOptions
from tests.ble.conftest import RecordingContext

APP = uuid.UUID("5f2dd896-b886-4549-ae01-e41acd7a354a")
OTHER = uuid.UUID("f7826da6-4fa2-4e98-8024-bc5b71e0893e")
NAMESPACE = bytes.fromhex("edd1ebeac04e5defa017")


def allowlist() -> Allowlist:
    return AllowlistOptions(
        app_uuids=[APP],
        fixed={
            f"eddystone-uid:{NAMESPACE.hex()}:0000000000aa": "shelf-tag.aa",
            f"ibeacon:{OTHER}:1:2": "reference.entrance",
        },
    ).build()


def test_app_ibeacon_becomes_its_rotating_token() -> None:
    assert allowlist().beacon_id(IBeacon(APP, 0x0001, 0x002A, -59)) == "app:0001002a"


def test_app_altbeacon_becomes_its_rotating_token() -> None:
    frame = AltBeacon(0x0118, APP.bytes + bytes.fromhex("beef0102"), -59, 0)
    assert allowlist().beacon_id(frame) == "app:beef0102"


def test_fixed_beacons_by_frame_key() -> None:
    allow = allowlist()
    assert allow.beacon_id(EddystoneUid(NAMESPACE, bytes.fromhex("0000000000aa"), -18)) == (
        "shelf-tag.aa"
    )
    assert allow.beacon_id(IBeacon(OTHER, 1, 2, -59)) == "reference.entrance"


@pytest.mark.parametrize(
    "frame",
    [
        IBeacon(OTHER, 1, 3, -59),  # same UUID, other major/minor: not listed
        IBeacon(uuid.UUID(int=7), 1, 2, -59),
        EddystoneUid(NAMESPACE, bytes.fromhex("0000000000ab"), -18),
        EddystoneTlm(0, 3000, 20.0, 1, 1.0),
        AltBeacon(0x0118, OTHER.bytes + b"\x00\x01\x00\x02", -59, 0),
    ],
)
def test_everything_else_is_dropped(frame: IBeacon | EddystoneUid | EddystoneTlm) -> None:
    assert allowlist().beacon_id(frame) is None


MAC_FORMS = [
    "aa:bb:cc:dd:ee:ff",
    "AA-BB-CC-DD-EE-FF",
    "aabbccddeeff",  # bare
    "AABBCCDDEEFF",
    "aabb.ccdd.eeff",  # dotted (Cisco)
    "tag-aabbccddeeff",
    "cafe-aabbccddeeff",  # looks like the tail of a UUID, but is not one
    "tag_aabb.ccdd.eeff",
    "001122334455",
]
NOT_MACS = [
    "app:0001002a",
    f"ibeacon:{OTHER}:1:2",  # a UUID's last group is 12 hex digits
    "04012345678901",  # a GTIN-14
    "aabbccddeeff00",  # 14 hex digits: not a MAC
    "xaabbccddeeff",
    "aabbccddeef",
    "E2801160600002084A9B1234",  # an EPC
    "aabb.ccdd.eeff0",
    "shelf-tag.aa",
]


@pytest.mark.parametrize("value", MAC_FORMS)
def test_every_written_form_of_a_mac_is_caught(value: str) -> None:
    assert contains_mac_address(value)
    with pytest.raises(ValidationError, match="MAC"):
        PresenceEvent.model_validate(
            {"kind": "enter", "beacon": value, "zone": "z1", "at": "2026-12-05T09:00:00Z"}
        )
    with pytest.raises(ValueError, match="MAC"):
        Allowlist.build([], {"ibeacon:x:1:2": value})


@pytest.mark.parametrize("value", NOT_MACS)
def test_ids_that_only_look_hex_pass(value: str) -> None:
    assert not contains_mac_address(value)


def test_an_eddystone_key_may_hold_its_12_digit_instance() -> None:
    """The key is matched on the edge and never published; only the id is guarded."""
    key = f"eddystone-uid:{NAMESPACE.hex()}:aabbccddeeff"
    allow = Allowlist.build([], {key: "shelf-tag.b"})
    assert allow.beacon_id(EddystoneUid(NAMESPACE, bytes.fromhex("aabbccddeeff"), -18)) == (
        "shelf-tag.b"
    )


def test_a_mac_cannot_be_configured_as_a_beacon_id() -> None:
    with pytest.raises(ValueError, match="MAC"):
        Allowlist.build([], {"ibeacon:x:1:2": "aa:bb:cc:dd:ee:ff"})
    with pytest.raises(ValueError, match="MAC"):
        BleakOptions.model_validate(
            {"zone": "z", "allowlist": {"fixed": {"ibeacon:x:1:2": "AA-BB-CC-DD-EE-FF"}}}
        )


async def test_no_mac_address_in_messages_logs_snapshot_or_metrics(
    ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = SimBleOptions(
        shoppers=6,
        non_app=6,
        speed=0,
        repeat=False,
        presence={"unseen_min_s": 10, "retention_s": 30},
        watchdog={"silence_s": 20, "check_s": 1},
    )
    driver = SimBleDriver("ble-1", options)
    # an adapter that hangs for a while makes the watchdog log too
    driver.radio.go_silent("hci2", recovers_on="reset")
    task = asyncio.create_task(driver.run(ctx))
    end = driver.sim.end + 60
    snapshots: list[DriverSnapshot] = []
    while driver.sim.now < end:
        await asyncio.sleep(0)
        if len(snapshots) < driver.sim.now - driver.sim.start:
            snapshots.append(driver.snapshot())
    metrics = driver.metrics()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    addresses = {
        address.upper() for phone in driver.sim.phones for _, address, _ in phone.identities
    }
    assert len(addresses) >= 12
    # the run really happened: events were published and other phones were filtered
    assert len(ctx.events()) >= 12
    assert metrics["not_allowlisted_total"] > 0
    assert metrics["not_beacon_total"] > 0
    assert metrics["adapter_resets_total"] >= 1
    assert caplog.records, "the watchdog logged something"
    for payload in ctx.payloads:
        text = payload.decode()
        assert not contains_mac_address(text)
        assert not any(a in text.upper() for a in addresses)
        message = decode(payload)
        assert isinstance(message, BlePresence)
        assert all(e.beacon.startswith("app:") for e in message.events)
    log_text = caplog.text.upper()
    assert not contains_mac_address(log_text)
    assert not any(a in log_text for a in addresses)
    everything_else = repr(snapshots) + repr(sorted(metrics))
    assert not contains_mac_address(everything_else)
    assert not any(a in everything_else.upper() for a in addresses)
    # retention: every shopper left more than 30 s before the end, so nothing is remembered
    assert driver.engine.tracked == 0
    assert metrics["beacons_forgotten_total"] >= 6
