"""The cloud's view of which compartments hold which orders, pushed to the edge.

The edge keeps its holds on disk (edge/locker/reservations.py), but a replaced SD card, a
restored backup or a cancel sent while the node was offline leaves it holding the wrong
thing. So on every birth of a node the cloud re-sends, per compartment of each bank:

- `locker.hold` for each order it has `assigned` or `ready_for_pickup` there, with the
  grant of a ready one (`order_seq`, `expiry`): an edge that lost the hold takes it back
  (parcel in: awaiting pickup, so the shopper's code opens it again);
- `locker.release` for an order the edge holds (reserved or awaiting pickup) that the cloud
  does not have there (cancelled, collected, expired, unknown): the edge frees it (or, with
  a parcel in, leaves it to staff as an expired hold) and its code opens nothing.

Both commands are idempotent at the edge: a birth of a node that already agrees changes
nothing there (the commands are still sent and acked: the cloud does not trust the birth's
`order_ref` alone to know the grant is right).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select

from cloud.domains import DomainTx
from cloud.lockers import commands, tables
from cloud.lockers.machine import OrderState
from cloud.lockers.views import as_utc
from protocols.messages import CompartmentState, CompartmentStatus, utc_now

if TYPE_CHECKING:
    from cloud.lockers.domain import LockersDomain

log = logging.getLogger(__name__)

S = OrderState
HELD = (S.ASSIGNED.value, S.READY_FOR_PICKUP.value)
_EDGE_HOLDS = (CompartmentState.RESERVED, CompartmentState.AWAITING_PICKUP)


async def resend(
    tx: DomainTx,
    domain: LockersDomain,
    store: str,
    node: str,
    bank: str,
    statuses: list[CompartmentStatus],
) -> None:
    o = tables.orders
    now = utc_now()
    held = (
        await tx.connection.execute(
            select(o).where(
                o.c.store_id == store,
                o.c.bank == bank,
                o.c.state.in_(HELD),
                o.c.compartment.is_not(None),
            )
        )
    ).all()
    # orders whose compartment the cloud still considers theirs in any way (a staged order
    # waiting for the reserve ack, an expired or exception one waiting for staff)
    ours = {
        (r.compartment, r.order_id)
        for r in await tx.connection.execute(
            select(o.c.compartment, o.c.order_id).where(
                o.c.store_id == store,
                o.c.bank == bank,
                o.c.state.in_([S.STAGED.value, S.EXPIRED.value, S.EXCEPTION.value, *HELD]),
            )
        )
    }
    restored = 0
    for order in held:
        if as_utc(order.hold_until) <= now:
            continue  # the sweep expires it; the edge expires its own hold
        args: dict[str, Any] = {
            "order_ref": order.order_id,
            "expiry": as_utc(order.hold_until).isoformat(),
        }
        if order.state == S.READY_FOR_PICKUP.value:
            args["order_seq"] = order.seq
        await _send(tx, domain, order, node, bank, commands.HOLD, args)
        restored += 1
    released = 0
    for status in statuses:
        ref = status.order_ref
        if ref is None or status.state not in _EDGE_HOLDS or (status.compartment, ref) in ours:
            continue
        log.warning(
            "store %s bank %s: the edge holds %s for %s, which the cloud does not have there;"
            " releasing it",
            store,
            bank,
            status.compartment,
            ref,
        )
        await commands.send(
            tx,
            store=store,
            node=node,
            bank=bank,
            compartment=status.compartment,
            name=commands.RELEASE,
            args={"order_ref": ref},
            expiry_s=domain.options.command_expiry_s,
            order_id=None,
        )
        released += 1
    if restored or released:
        log.info(
            "store %s bank %s birth: re-sent %d hold(s), %d release(s)",
            store,
            bank,
            restored,
            released,
        )


async def release(tx: DomainTx, domain: LockersDomain, order: Row[Any]) -> bool:
    """Tell the edge the order no longer holds its compartment (cancel). False if it has
    none."""
    if order.compartment is None or order.node_id is None or order.bank is None:
        return False
    await _send(
        tx,
        domain,
        order,
        order.node_id,
        order.bank,
        commands.RELEASE,
        {"order_ref": order.order_id},
    )
    return True


async def send_hold(
    tx: DomainTx, domain: LockersDomain, order: Row[Any], args: dict[str, Any]
) -> None:
    """The order's hold changed (extended): the edge moves its end (and its grant)."""
    await _send(tx, domain, order, order.node_id, order.bank, commands.HOLD, args)


async def _send(
    tx: DomainTx,
    domain: LockersDomain,
    order: Row[Any],
    node: str,
    bank: str,
    name: str,
    args: dict[str, Any],
) -> None:
    await commands.send(
        tx,
        store=order.store_id,
        node=node,
        bank=bank,
        compartment=order.compartment,
        name=name,
        args=args,
        expiry_s=domain.options.command_expiry_s,
        order_id=order.order_id,
    )
