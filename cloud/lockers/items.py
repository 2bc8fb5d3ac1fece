"""Items by EPC: where RFID last saw each one (for pick lists), and returns read back in.

`epc_locations` follows the RFID item events: `arrived`/`moved` put the EPC on its shelf,
`departed` marks it off the shelf (still in the store: no pick list offers it, a pick may
name it), `left_store` removes it. A returned item is `received` the first time RFID reads
its EPC in the order's store after the return was registered, and is no longer sold
(`sales.unsell`: carried out again unsold, it raises `exit_unsold`); one returned damaged is also
held back from sale (`stock.hold_back` under `damaged:<store>`: on hand, reserved, never
available).

Both are written once per ingest batch (`before_commit`), from the batch's events folded
per EPC: the same end state as one message at a time, in a few statements instead of
three per message that carried item events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from cloud.domains import DomainTx
from cloud.inventory import stock
from cloud.inventory.sales import unsell
from cloud.lockers import tables
from cloud.lockers.views import iso
from protocols.messages import ItemEvent, ItemEventKind, RfidEvents

log = logging.getLogger(__name__)

_ON_SHELF = (ItemEventKind.ARRIVED, ItemEventKind.MOVED)


# EPCs per statement at most (SQLite's bound on parameters is 32,766; stay well under it).
CHUNK = 500


@dataclass(slots=True)
class ItemReads:
    """A batch's RFID item events, folded: written once at the end of the batch."""

    # (store, epc) -> the batch's last event of it: what epc_locations ends up holding
    latest: dict[tuple[str, str], ItemEvent] = field(default_factory=dict)
    # (store, epc) -> its first on-shelf read in the batch: the one that receives a return
    first_seen: dict[tuple[str, str], ItemEvent] = field(default_factory=dict)
    # (store, epc) -> its last on-shelf read in the batch: the shelf a `departed` left
    last_on_shelf: dict[tuple[str, str], ItemEvent] = field(default_factory=dict)

    def stores(self) -> set[str]:
        return {store for store, _epc in self.latest}


def note_rfid(reads: ItemReads, message: RfidEvents) -> None:
    """Fold one message's item events into the batch's (its events are in order)."""
    store = message.store
    for item in message.items:
        key = (store, item.epc)
        reads.latest[key] = item
        if _on_shelf(item):
            reads.last_on_shelf[key] = item
            reads.first_seen.setdefault(key, item)


async def flush_rfid(tx: DomainTx, reads: ItemReads) -> None:
    """Apply the batch's item events: the same end state as one message at a time (each
    EPC's row follows its last event), in a few statements whatever the batch size."""
    if not reads.latest:
        return
    e = tables.epc_locations
    rows: list[dict[str, Any]] = []  # the rows epc_locations ends up with for these EPCs
    replaced: list[dict[str, Any]] = []  # EPCs whose row goes (and comes back in `rows`)
    off_shelf: list[dict[str, Any]] = []  # departed, on a shelf before this batch
    for (store, epc), item in reads.latest.items():
        if item.kind is ItemEventKind.DEPARTED:
            # still in the store (a picker's hand, a basket) until `left_store`: a pick may
            # name it, so its row stays, marked off the shelf it was last read on
            shelf = reads.last_on_shelf.get((store, epc))
            if shelf is None:
                off_shelf.append({"b_store": store, "b_epc": epc, "b_at": item.at})
                continue
            rows.append(_row(store, epc, shelf, departed_at=item.at))
        elif _on_shelf(item):
            rows.append(_row(store, epc, item, departed_at=None))
        replaced.append({"b_store": store, "b_epc": epc})
    if replaced:
        await tx.connection.execute(
            delete(e).where(e.c.store_id == bindparam("b_store"), e.c.epc == bindparam("b_epc")),
            replaced,
        )
    if off_shelf:
        await tx.connection.execute(
            update(e)
            .where(
                e.c.store_id == bindparam("b_store"),
                e.c.epc == bindparam("b_epc"),
                e.c.departed_at.is_(None),
            )
            .values(departed_at=bindparam("b_at")),
            off_shelf,
        )
    if rows:
        await tx.connection.execute(insert(e), rows)
    if reads.first_seen:
        await _receive_returns(tx, reads.first_seen)
    reads.latest.clear()
    reads.first_seen.clear()
    reads.last_on_shelf.clear()


def _row(store: str, epc: str, item: ItemEvent, *, departed_at: Any) -> dict[str, Any]:
    return {
        "store_id": store,
        "epc": epc,
        "gtin": item.gtin,
        "shelf": item.shelf,
        "seen_at": item.at,
        "departed_at": departed_at,
    }


def _on_shelf(item: ItemEvent) -> bool:
    return item.kind in _ON_SHELF and item.gtin is not None and item.shelf is not None


async def _receive_returns(tx: DomainTx, seen: dict[tuple[str, str], ItemEvent]) -> None:
    """Returns expected in a store that RFID has now read there on a shelf."""
    r = tables.order_returns
    epcs = sorted({epc for _store, epc in seen})
    expected: list[Any] = []
    for start in range(0, len(epcs), CHUNK):
        expected += (
            await tx.connection.execute(
                select(r)
                .where(r.c.status == "expected", r.c.epc.in_(epcs[start : start + CHUNK]))
                .order_by(r.c.id)
            )
        ).all()
    for row in expected:
        read = seen.get((row.store_id, row.epc))
        if read is None:
            continue  # that EPC read in another store
        gtin = str(read.gtin)
        order = (
            await tx.connection.execute(
                select(tables.orders.c["items"]).where(tables.orders.c.order_id == row.order_id)
            )
        ).scalar_one()
        if gtin not in {str(line["gtin"]) for line in order}:
            log.warning(
                "return %d of order %s: EPC %s is GTIN %s, not on the order; left expected",
                row.id,
                row.order_id,
                row.epc,
                gtin,
            )
            await tx.connection.execute(
                update(r)
                .where(r.c.id == row.id)
                .values(reason=f"read as GTIN {gtin}, which the order does not have")
            )
            continue
        status = "damaged" if row.condition == "damaged" else "received"
        await tx.connection.execute(
            update(r)
            .where(r.c.id == row.id)
            .values(status=status, gtin=gtin, received_at=read.at, reason=None)
        )
        # back in the store's hands (damaged too: still ours, never to be carried out)
        await unsell(tx.connection, row.store_id, [row.epc])
        if status == "damaged":
            await stock.hold_back(
                tx.connection,
                holder=damaged_holder(row.store_id),
                store=row.store_id,
                gtin=gtin,
                units=1,
                at=read.at,
            )
        tx.change(
            "order_return",
            row.store_id,
            {"order_id": row.order_id, "return_id": row.id, "epc": row.epc, "status": status},
        )


def damaged_holder(store: str) -> str:
    """The standing reservation that keeps a store's damaged returns from being sold."""
    return f"damaged:{store}"


async def returns_of(connection: Any, order_id: str) -> list[dict[str, Any]]:
    r = tables.order_returns
    rows = (
        await connection.execute(select(r).where(r.c.order_id == order_id).order_by(r.c.id))
    ).all()
    return [
        {
            "id": row.id,
            "epc": row.epc,
            "gtin": row.gtin,
            "method": row.method,
            "bank": row.bank,
            "compartment": row.compartment,
            "condition": row.condition,
            "status": row.status,
            "reason": row.reason,
            "created_at": iso(row.created_at),
            "received_at": iso(row.received_at),
        }
        for row in rows
    ]
