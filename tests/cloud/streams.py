"""Builders for realistic edge streams, as the edge daemon publishes them."""

from __future__ import annotations

from datetime import timedelta

from protocols.codec import encode, topic_for
from protocols.messages import (
    Birth,
    CountDelta,
    Message,
    NodeState,
    RfidEvents,
    ShelfCount,
    Status,
    StreamPosition,
)
from tests.samples import GTIN, T0

STORE, NODE, READER = "store-042", "pi-front", "reader-1"
RFID_STREAM = f"rfid/{READER}"


def gtin(i: int) -> str:
    return f"{80614141000000 + i:014d}"


def rfid(
    seq: int, counts: dict[tuple[str, str], int], *, store: str = STORE, node: str = NODE
) -> RfidEvents:
    return RfidEvents(
        store=store,
        node=node,
        seq=seq,
        reader=READER,
        event_time=T0 + timedelta(seconds=seq),
        counts=[CountDelta(shelf=s, gtin=g, delta=1, count=c) for (s, g), c in counts.items()],
    )


def birth(
    bd_seq: int,
    *,
    seq: int = 0,
    shelves: dict[tuple[str, str], int] | None = None,
    rfid_seq: int | None = None,
    store: str = STORE,
    node: str = NODE,
) -> Birth:
    return Birth(
        store=store,
        node=node,
        seq=seq,
        bd_seq=bd_seq,
        version="0.1.0",
        event_time=T0,
        shelves=[ShelfCount(shelf=s, gtin=g, count=c) for (s, g), c in (shelves or {}).items()],
        streams=[] if rfid_seq is None else [StreamPosition(stream=RFID_STREAM, seq=rfid_seq)],
    )


def status(state: NodeState, bd_seq: int, *, store: str = STORE, node: str = NODE) -> Status:
    return Status(store=store, node=node, seq=0, state=state, bd_seq=bd_seq)


def wire(message: Message) -> tuple[str, bytes]:
    return topic_for(message), encode(message)


__all__ = [
    "GTIN",
    "NODE",
    "READER",
    "RFID_STREAM",
    "STORE",
    "birth",
    "gtin",
    "rfid",
    "status",
    "wire",
]
