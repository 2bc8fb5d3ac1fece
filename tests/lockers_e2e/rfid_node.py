"""A store's RFID node as the cloud sees it: its birth (shelf counts) and item events on
the real broker, in the protocol's own messages. The readers themselves (LLRP) are tested
in tests/rfid; here only what they report matters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from protocols.codec import encode, topic_for
from protocols.messages import (
    Birth,
    CountDelta,
    ItemEvent,
    ItemEventKind,
    Message,
    RfidEvents,
    ShelfCount,
)
from tests.mqtt_helpers import publisher

RFID_NODE, READER = "pi-rfid", "reader-1"


class RfidNode:
    def __init__(self, host: str, port: int, store: str) -> None:
        self.client = publisher(host, port)
        self.store = store
        self.seq = 0
        self.counts: dict[tuple[str, str], int] = {}

    async def publish(self, message: Message) -> None:
        info = self.client.publish(topic_for(message), encode(message), qos=1)
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def birth(self, counts: dict[tuple[str, str], int]) -> None:
        """(shelf, GTIN) -> count: the node's whole shelf state."""
        self.counts = dict(counts)
        await self.publish(
            Birth(
                store=self.store,
                node=RFID_NODE,
                seq=self.seq,
                bd_seq=1,
                version="1",
                shelves=[ShelfCount(shelf=s, gtin=g, count=n) for (s, g), n in counts.items()],
            )
        )

    async def items(self, kind: ItemEventKind, gtin: str, shelf: str | None, *epcs: str) -> None:
        """EPCs arriving on (or departing from) a shelf, with the count deltas they make."""
        self.seq += 1
        now = datetime.now(UTC)
        deltas = []
        where = shelf
        if kind is ItemEventKind.DEPARTED:
            assert shelf is not None
            where = None
        key = (shelf or "", gtin)
        if shelf is not None:
            step = len(epcs) if kind is ItemEventKind.ARRIVED else -len(epcs)
            self.counts[key] = self.counts.get(key, 0) + step
            deltas.append(CountDelta(shelf=shelf, gtin=gtin, delta=step, count=self.counts[key]))
        await self.publish(
            RfidEvents(
                store=self.store,
                node=RFID_NODE,
                seq=self.seq,
                reader=READER,
                event_time=now,
                items=[
                    ItemEvent(
                        kind=kind,
                        epc=epc,
                        gtin=gtin,
                        shelf=where,
                        from_shelf=shelf if where is None else None,
                        at=now,
                    )
                    for epc in epcs
                ],
                counts=deltas,
            )
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
