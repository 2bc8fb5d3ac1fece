"""The lockers domain: BOPIS orders driven by staff, the online channel and locker events.

Order facts come from every admitted message, live or not: a `collected` event replayed
from an edge's outbox after an outage is still the moment the shopper took the parcel
(dedup guarantees it is applied once). The compartment mirror takes only live messages:
events already covered by the node's birth snapshot must not roll the mirror back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, select

from cloud.domains import Domain, DomainContext, DomainTx
from cloud.lockers import commands, holds, items, orders, returns, tables
from cloud.lockers.config import BankConfig, LockersOptions
from cloud.lockers.machine import IllegalTransitionError, OrderState
from cloud.lockers.mirror import ALARM_CAUSES, mirror
from cloud.lockers.notify import Notifier
from cloud.lockers.picks import ZoneOf, on_the_floor
from cloud.lockers.views import as_utc
from cloud.state.db import writing
from protocols.codec import encode, topic_for
from protocols.messages import (
    AckStatus,
    Birth,
    CommandAck,
    CompartmentEvent,
    LockerEvents,
    LockerSnapshot,
    Message,
    RfidEvents,
    utc_now,
)
from protocols.pickup import Grant, PickupKey, key_check, keypad_code, qr_payload

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger(__name__)

S = OrderState


class AssignmentError(Exception):
    """No compartment can take the order (the API answers 409 with this reason)."""


class BankKeyChangedError(Exception):
    """The bank's key is not the one the order was assigned under: the code derived now
    would not open the locker (the API answers 409 with this reason)."""


class LockersDomain(Domain):
    name = "lockers"

    def __init__(
        self,
        options: LockersOptions,
        keys: dict[tuple[str, str], PickupKey],
        safety_stock_for: Callable[[str], int] = lambda _store: 0,
        intake_secret: bytes | None = None,
        zone_of: ZoneOf = on_the_floor,
    ) -> None:
        self.options = options
        self.zone_of = zone_of  # the inventory domain's shelf -> zone (pick lists)
        self.intake_secret = intake_secret
        self._keys = keys
        self.safety_stock_for = safety_stock_for
        self.banks: dict[tuple[str, str], BankConfig] = {
            (b.store, b.bank): b for b in options.banks
        }
        self.notifier = Notifier(options.webhook, options.cloud_node)
        self.context: DomainContext | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def router(self) -> APIRouter:
        from cloud.lockers.api import build_router
        from cloud.lockers.orders_api import add_order_routes

        router = build_router(self)
        add_order_routes(router, self)
        returns.add_return_routes(router, self)
        return router

    async def start(self, context: DomainContext) -> None:
        self.context = context
        self.notifier.start(context.engine)
        self._sweeper = asyncio.create_task(self._sweep_expired(), name="locker-expiry")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.notifier.stop()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DomainTx]:
        """A transaction outside the ingest batch (API requests, timers); what it queued is
        released after the commit, exactly as for a batch."""
        context = self.context
        if context is None:
            raise RuntimeError("the lockers domain is not started")
        async with writing(context.engine) as connection:
            tx = DomainTx(connection)
            yield tx
        for change in tx.changes:
            context.bus.publish(change)
        for command in tx.commands:
            context.publish(topic_for(command), encode(command))
        for topic, payload in tx.publishes:
            context.publish(topic, payload)

    # ------------------------------------------------------------------ ingest

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if isinstance(message, LockerEvents):
            if (message.store, message.bank) not in self.banks:
                return
            if live:
                await mirror(
                    tx,
                    message.store,
                    message.node,
                    message.bank,
                    message.events,
                    message.event_time,
                )
            for event in message.events:
                await self._on_event(tx, message, event)
        elif isinstance(message, LockerSnapshot) and live:
            if (message.store, message.bank) not in self.banks:
                return
            await mirror(
                tx,
                message.store,
                message.node,
                message.bank,
                message.compartments,
                message.event_time,
            )
        elif isinstance(message, Birth) and live:
            for bank, statuses in message.compartments.items():
                if (message.store, bank) in self.banks:
                    await mirror(
                        tx, message.store, message.node, bank, statuses, message.event_time
                    )
                    await holds.resend(tx, self, message.store, message.node, bank, statuses)
                    await returns.resend(tx, self, message.store, message.node, bank)
        elif isinstance(message, RfidEvents) and message.items:
            items.note_rfid(self._reads(tx), message)
        elif isinstance(message, CommandAck) and message.command.startswith("locker."):
            await self._on_ack(tx, message)

    async def before_commit(self, tx: DomainTx) -> None:
        reads = tx.scratch.get(self.name)
        if isinstance(reads, items.ItemReads) and reads.latest:
            stores = reads.stores()
            await items.flush_rfid(tx, reads)
            # an emptied locker return completes once its EPCs are all read back in
            await returns.settle(tx, *stores)

    def _reads(self, tx: DomainTx) -> items.ItemReads:
        reads = tx.scratch.get(self.name)
        if reads is None:
            reads = tx.scratch[self.name] = items.ItemReads()
        assert isinstance(reads, items.ItemReads)
        return reads

    async def _on_event(self, tx: DomainTx, message: LockerEvents, event: CompartmentEvent) -> None:
        store, bank = message.store, message.bank
        if event.cause in returns.EVENT_CAUSES:
            await returns.on_event(tx, store, bank, event)
            return
        order = await orders.in_compartment(tx, store, bank, event.compartment)
        if event.cause in ALARM_CAUSES:
            await tx.connection.execute(
                insert(tables.alarms).values(
                    store_id=store,
                    bank=bank,
                    compartment=event.compartment,
                    kind=event.cause,
                    order_id=order.order_id if order else None,
                    at=event.at,
                )
            )
            log.warning("locker alarm %s at %s/%s/%s", event.cause, store, bank, event.compartment)
        if order is None:
            return
        try:
            await self._order_fact(tx, order, event)
        except IllegalTransitionError as exc:
            # The edge reports what happened; an order that cannot follow is noted, and the
            # message (and the rest of the batch) still applies.
            log.warning("locker event %s ignored for the order: %s", event.cause, exc)

    async def _order_fact(self, tx: DomainTx, order: Row[Any], event: CompartmentEvent) -> None:
        state = S(order.state)
        if event.cause == "loaded" and state is S.ASSIGNED:
            await self._send_code(tx, order)
        elif event.cause == "collected" and state in (
            S.READY_FOR_PICKUP,
            S.EXPIRED,
            S.EXCEPTION,
        ):
            await orders.move(tx, self.notifier, order, S.COLLECTED, "collected", event.at)
        elif event.cause == "hold_expired" and state in (S.ASSIGNED, S.READY_FOR_PICKUP):
            await orders.move(tx, self.notifier, order, S.EXPIRED, "hold_expired", event.at)
        elif event.cause == "emptied" and state is S.EXPIRED:
            await orders.move(tx, self.notifier, order, S.RETURNED_TO_STOCK, "emptied", event.at)
        elif event.cause == "forced_open" and state in (S.ASSIGNED, S.READY_FOR_PICKUP):
            await orders.move(
                tx,
                self.notifier,
                order,
                S.EXCEPTION,
                "forced_open",
                event.at,
                reason=f"compartment {event.compartment} was forced open",
            )

    async def _on_ack(self, tx: DomainTx, ack: CommandAck) -> None:
        row = await commands.record_ack(tx, ack)
        if row is None or not ack.status.final or row.order_id is None:
            return
        if row.name == returns.RETURN:
            await returns.on_ack(tx, ack)
            return
        order = await orders.load(tx, row.order_id)
        if order is None:
            return
        ok = ack.status is AckStatus.DONE
        state = S(order.state)
        now = utc_now()
        if row.name == commands.RESERVE and state is S.STAGED:
            if ok:
                await orders.move(tx, self.notifier, order, S.ASSIGNED, "reserve_acked", now)
            else:
                await orders.move(
                    tx,
                    self.notifier,
                    order,
                    S.EXCEPTION,
                    "reserve_failed",
                    now,
                    reason=f"locker.reserve {ack.status}: {ack.reason}",
                    bank=None,
                    compartment=None,
                    node_id=None,
                )
        elif row.name == commands.SET_CODE and state is S.ASSIGNED:
            if ok:
                await orders.move(
                    tx, self.notifier, order, S.READY_FOR_PICKUP, "code_at_locker", now
                )
            else:
                await orders.move(
                    tx,
                    self.notifier,
                    order,
                    S.EXCEPTION,
                    "set_code_failed",
                    now,
                    reason=f"locker.set_code {ack.status}: {ack.reason}",
                )

    # ------------------------------------------------------------------ assignment and codes

    async def assign(
        self, tx: DomainTx, order: Row[Any], bank: str | None, compartment: str | None
    ) -> tuple[str, str]:
        """Pick a free compartment (or check the one asked for) and send `locker.reserve`.
        The order becomes `assigned` when the edge acks."""
        if S(order.state) is not S.STAGED:
            raise IllegalTransitionError(order.order_id, S(order.state), S.ASSIGNED)
        if order.compartment is not None:
            raise AssignmentError(
                f"order {order.order_id} is already being assigned to"
                f" {order.bank}/{order.compartment} (waiting for the edge)"
            )
        store = order.store_id
        c = tables.compartments
        query = select(c).where(c.c.store_id == store, c.c.state == "available")
        query = query.where(c.c.bank.in_([b for (s, b) in self.banks if s == store]))
        if bank is not None:
            query = query.where(c.c.bank == bank)
        if compartment is not None:
            query = query.where(c.c.compartment == compartment)
        candidates = (await tx.connection.execute(query.order_by(c.c.bank, c.c.compartment))).all()
        o = tables.orders
        taken = {
            (r.bank, r.compartment)
            for r in await tx.connection.execute(
                select(o.c.bank, o.c.compartment).where(
                    o.c.store_id == store,
                    o.c.compartment.is_not(None),
                    o.c.state.in_(
                        [
                            s.value
                            for s in (
                                S.STAGED,
                                S.ASSIGNED,
                                S.READY_FOR_PICKUP,
                                S.EXPIRED,
                                S.EXCEPTION,
                            )
                        ]
                    ),
                )
            )
        }
        taken |= await returns.taken_compartments(tx, store)  # kept for drop-offs
        free = [
            r
            for r in candidates
            if not r.occupied and not r.flags and (r.bank, r.compartment) not in taken
        ]
        if not free:
            where = f"{bank or 'any bank'}/{compartment or 'any compartment'}"
            raise AssignmentError(f"no free compartment in store {store} ({where})")
        chosen = free[0]
        config = self.banks[(store, chosen.bank)]
        hold = Grant.make(
            chosen.bank,
            chosen.compartment,
            order.seq,
            utc_now() + timedelta(hours=self.options.hold_hours),
        )
        await orders.update_fields(
            tx,
            order.order_id,
            node_id=config.node,
            bank=chosen.bank,
            compartment=chosen.compartment,
            hold_until=hold.expiry,
            code_hash=key_check(self._keys[(store, chosen.bank)], hold),
            updated_at=utc_now(),
        )
        await commands.send(
            tx,
            store=store,
            node=config.node,
            bank=chosen.bank,
            compartment=chosen.compartment,
            name=commands.RESERVE,
            args={"order_ref": order.order_id, "expiry": hold.expiry.isoformat()},
            expiry_s=self.options.command_expiry_s,
            order_id=order.order_id,
        )
        return chosen.bank, chosen.compartment

    async def _send_code(self, tx: DomainTx, order: Row[Any]) -> None:
        """The parcel is in: tell the edge which grant to derive the code from (it verifies
        codes offline with its own copy of the key). Nothing here reveals the code."""
        await commands.send(
            tx,
            store=order.store_id,
            node=order.node_id,
            bank=order.bank,
            compartment=order.compartment,
            name=commands.SET_CODE,
            args={
                "order_seq": order.seq,
                "expiry": as_utc(order.hold_until).isoformat(),
            },
            expiry_s=self.options.command_expiry_s,
            order_id=order.order_id,
        )

    def key_of(self, store: str, bank: str) -> PickupKey:
        return self._keys[(store, bank)]

    def pickup_code(self, order: Row[Any]) -> tuple[str, str]:
        """(keypad code, QR payload) for the order, re-derived from the bank's key, which
        must be the key the order was assigned under (the edge has that one)."""
        key = self._keys[(order.store_id, order.bank)]
        grant = Grant.make(order.bank, order.compartment, order.seq, as_utc(order.hold_until))
        digits = self.banks[(order.store_id, order.bank)].code_digits
        code = keypad_code(key, grant, digits)
        stored = order.code_hash or ""
        if not (
            hmac.compare_digest(key_check(key, grant), stored)
            or hmac.compare_digest(_legacy_code_hash(code, grant), stored)
        ):
            raise BankKeyChangedError(
                f"order {order.order_id}: the key of bank {order.bank} changed since the order"
                " was assigned; its code would not open the locker (re-assign the order)"
            )
        return code, qr_payload(key, grant)

    # ------------------------------------------------------------------ expiry

    async def _sweep_expired(self) -> None:
        """The edge expires holds itself; this covers an edge that is offline at the time."""
        while True:
            await asyncio.sleep(self.options.expiry_check_s)
            try:
                await self.expire_due(utc_now())
            except Exception:
                log.exception("locker expiry sweep failed")

    async def expire_due(self, now: datetime) -> int:
        o = tables.orders
        async with self.transaction() as tx:
            due = (
                await tx.connection.execute(
                    select(o).where(
                        o.c.state.in_([S.ASSIGNED.value, S.READY_FOR_PICKUP.value]),
                        o.c.hold_until < now,
                    )
                )
            ).all()
            for order in due:
                # stamped with when the hold ended, as the edge's hold_expired would be
                expired_at = as_utc(order.hold_until)
                await orders.move(tx, self.notifier, order, S.EXPIRED, "hold_over", expired_at)
            await returns.expire_due(tx, now)  # drop-off codes, for an edge offline then
        return len(due)


def _legacy_code_hash(code: str, grant: Grant) -> str:
    """What `code_hash` held for orders assigned before the keyed check (scrypt of the
    code, salted with where it is valid): still accepted, so those orders keep working."""
    salt = b"|".join(
        [
            b"storegate-pickup-v1",
            grant.bank.encode(),
            grant.compartment.encode(),
            b"%d" % grant.order_seq,
        ]
    )
    return hashlib.scrypt(code.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32).hex()
