"""EPCIS domain: item events become GS1 EPCIS 2.0 ObjectEvents with CBV-correct terms,
stored with the batch that carried them and served through the EPCIS 2.0 REST query
interface (`GET /epcis/events`, docs/epcis.md).

Events are written inside the ingest batch transaction, so each is stored exactly once
with the message that carried it (and its `eventID`, derived from the message's stream and
msg_id, is unique besides). Events a birth already covers (`live=False`) are history all the
same: EPCIS is a record of what happened, so they are stored too.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.domains import Domain, DomainTx
from cloud.epcis.cbv import classify, object_event, read_shelf, to_millis
from cloud.epcis.config import EpcisOptions, ReadPointRole, parse_options
from cloud.epcis.identity import epc_uri
from cloud.epcis.tables import epcis_events
from protocols.messages import ItemEvent, Message, RfidEvents

if TYPE_CHECKING:
    from fastapi import APIRouter

    from cloud.config import CloudSettings

EVENT_ID_NAMESPACE = uuid.UUID("6f1c3c8e-7d0e-4f57-9a59-2b1f3f1b5e21")


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id(message: Message, index: int) -> str:
    """The same for the same item event of the same message however often it is resent
    (the outbox keeps its msg_id); different after an edge reinstall restarts its seqs."""
    name = f"{message.store}/{message.node}/{message.stream}/{message.msg_id}/{index}"
    return f"urn:uuid:{_uuid5(name)}"


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(EVENT_ID_NAMESPACE, name))` (RFC 4122, SHA-1 name-based), without
    building a UUID object: it ran once per item event, and the object cost twice the hash.
    tests/epcis/test_event_ids.py holds it to `uuid.uuid5`."""
    # SHA-1 is what RFC 4122 prescribes for version 5 names: an identifier, not security
    sha1 = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class EpcisDomain(Domain):
    name = "epcis"

    def __init__(self, options: EpcisOptions) -> None:
        self.options = options

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if not isinstance(message, RfidEvents) or not message.items:
            return
        record_time = datetime.now(UTC)
        # The batch's events, inserted together in before_commit (an insert per message was
        # a database round trip per message).
        pending: list[dict[str, Any]] = tx.scratch.setdefault(self.name, [])
        for index, item in enumerate(message.items):
            row = await self._row(tx.connection, message, index, item, record_time, pending)
            if row is not None:
                pending.append(row)

    async def before_commit(self, tx: DomainTx) -> None:
        pending = tx.scratch.get(self.name)
        if pending:
            await _insert(tx.connection, pending)

    async def _row(
        self,
        connection: AsyncConnection,
        message: RfidEvents,
        index: int,
        item: ItemEvent,
        record_time: datetime,
        pending: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        store = message.store
        shelf = read_shelf(item)
        role = ReadPointRole.SHELF if shelf is None else self.options.read_point(store, shelf)[1]
        # to the millisecond, as served; passed along rather than copying the item with it
        # (a model copy per item event cost more than building the event)
        at = to_millis(item.at)
        sold = False
        if role is ReadPointRole.EXIT:
            # the lookup must see the batch's earlier events (a sale just before)
            await _insert(connection, pending)
            sold = await self._sold(connection, store, item.epc, at)
        happened = classify(item, role, sold)
        if happened is None:
            return None
        event = object_event(
            item,
            happened,
            store=store,
            options=self.options,
            event_id=event_id(message, index),
            record_time=record_time,
            at=at,
        )
        return {
            "event_id": event["eventID"],
            "store_id": store,
            "event_time": at,
            "record_time": record_time,
            "epc": event["epcList"][0],
            "biz_step": event["bizStep"],
            "disposition": event.get("disposition"),
            "read_point": event.get("readPoint", {}).get("id"),
            "biz_location": event.get("bizLocation", {}).get("id"),
            "event": event,
        }

    async def _sold(self, connection: AsyncConnection, store: str, epc: str, at: datetime) -> bool:
        """Whether the item's disposition in force in this store is `retail_sold`: the one
        its latest event with a disposition set (EPCIS: an event without one leaves the
        previous one standing)."""
        t = epcis_events
        latest = (
            await connection.execute(
                select(t.c.disposition)
                .where(t.c.store_id == store, t.c.epc == epc_uri(epc))
                .where(t.c.event_time <= at, t.c.disposition.is_not(None))
                .order_by(t.c.event_time.desc(), t.c.id.desc())
                .limit(1)
            )
        ).first()
        return latest is not None and latest.disposition == "retail_sold"

    def router(self) -> APIRouter:
        from cloud.epcis.api import create_router

        return create_router(self)


async def _insert(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """One executemany for a batch's events: a row at a time cost ~1 ms each on SQLite
    (1,500 item events took 1.9 s). An eventID already stored is that same event again and
    is skipped: a unique-constraint error would fail the batch, and the ingestor would retry
    it for ever, holding up every store behind it."""
    if not rows:
        return
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(epcis_events).on_conflict_do_nothing(index_elements=["event_id"])
    await connection.execute(statement, rows)
    rows.clear()


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> EpcisDomain:
    return EpcisDomain(parse_options(options))
