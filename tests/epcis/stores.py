"""A store laid out in GS1 locations, and item events in it, for the EPCIS tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from protocols.messages import ItemEvent, ItemEventKind, RfidEvents
from tests.cloud.streams import NODE, READER, STORE

STORE_GLN = "0614141000012"  # GS1 Company Prefix 0614141, location reference 00001
TILL_GLN = "0614141000029"
STORE_SGLN = "urn:epc:id:sgln:0614141.00001.0"
SHELF_SGLN = "urn:epc:id:sgln:0614141.00001.S1"
SHELF2_SGLN = "urn:epc:id:sgln:0614141.00001.S2"
DOOR_SGLN = "urn:epc:id:sgln:0614141.00001.DOOR1"
TILL_SGLN = "urn:epc:id:sgln:0614141.00002.0"

OPTIONS: dict[str, Any] = {
    "stores": {
        STORE: {
            "gln": STORE_GLN,
            "company_prefix_digits": 7,
            "read_points": {
                "shelf-1": {"extension": "S1"},
                "shelf-2": {"extension": "S2"},
                "door-1": {"role": "exit", "extension": "DOOR1"},
                "till-1": {"role": "pos", "gln": TILL_GLN, "company_prefix_digits": 7},
            },
        }
    }
}

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# SGTIN-96 of GTIN 80614141123458 with serial 6789; other serials by adding to the hex.
SGTIN_6789 = "3074257BF7194E4000001A85"


def sgtin(serial: int) -> str:
    return f"{int(SGTIN_6789, 16) - 6789 + serial:024X}"


def sgtin_uri(serial: int) -> str:
    return f"urn:epc:id:sgtin:0614141.812345.{serial}"


def item(
    kind: str, serial: int, at: datetime, shelf: str | None = None, from_shelf: str | None = None
) -> ItemEvent:
    return ItemEvent(
        kind=ItemEventKind(kind),
        epc=sgtin(serial),
        gtin="80614141123458",
        shelf=shelf,
        from_shelf=from_shelf,
        at=at,
    )


def report(seq: int, *items: ItemEvent, store: str = STORE) -> RfidEvents:
    return RfidEvents(
        store=store,
        node=NODE,
        seq=seq,
        reader=READER,
        event_time=T0 + timedelta(seconds=seq),
        items=list(items),
    )
