"""Returns into a locker compartment (a drop-off), from the request to the stock.

    requested ─edge acks locker.return─► return_pending ─returned_dropped─► returned_in_locker
        │                                     │                                  │ return_emptied
        └─ refused ─► failed                  └─ return_expired ─► expired        ▼
                                                    emptied ─all EPCs read back─► return_completed

1. `POST /api/v1/orders/{id}/locker-return` (shopper or staff, a collected order): the cloud
   picks the smallest free compartment of a fitting size at the order's store, registers
   the items as `order_returns` (method `locker`, `expected`), and sends the edge
   `locker.return` with the drop-off grant (`order_seq` = this return's id, `expiry`). The
   edge derives the drop-off code itself (`protocols.pickup.dropoff_code`); the cloud
   keeps only `key_check` and shows the code once, in this response.
   Every birth of the node re-sends it while it is pending (`resend`).
2. The edge reports `returned_dropped` (door shut on a parcel): `returned_in_locker`, and a
   staff task "empty compartment X" (`GET /api/v1/stores/{store}/lockers/returns`, the
   `locker_return` live change).
3. Staff open it (`…/lockers/{bank}/{compartment}/open`) and take the parcel out: the edge's
   `return_emptied`, the compartment is free. Each item is `received` (back in stock) or
   `damaged` (held back) when RFID reads its EPC in the store (cloud/lockers/items.py);
   once all are read and the compartment is emptied, the return is `return_completed`.

A return that expires before the drop-off (the edge's `return_expired`, or the cloud's
expiry sweep for an edge offline then), that the edge refuses, or that the shopper or staff
call off (`POST /api/v1/orders/{id}/locker-return/cancel`, which sends the edge
`locker.release` so the code opens nothing any more), gives its items back:
their `expected` rows are removed, so the shopper may start again (or bring them to the
counter). A drop-off reported after the sweep gave up wins: the return is
`returned_in_locker` again, with its items.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import Row, delete, func, insert, select, update

from cloud.api.deps import Reader, Shopping
from cloud.api.errors import ApiError, error_responses
from cloud.domains import DomainTx
from cloud.lockers import commands, orders, tables
from cloud.lockers.config import SIZE_RANK, CompartmentSize
from cloud.lockers.machine import OrderState
from cloud.lockers.views import as_utc, iso
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import AckStatus, CommandAck, CompartmentEvent, utc_now
from protocols.pickup import Grant, dropoff_code, key_check

if TYPE_CHECKING:
    from cloud.lockers.domain import LockersDomain

log = logging.getLogger(__name__)

S = OrderState
RETURN = "locker.return"
# Locker returns that keep their compartment (no order may be assigned to it meanwhile).
ACTIVE = ("requested", "return_pending", "returned_in_locker")
# Returns whose items the cloud still waits for.
_OPEN = (*ACTIVE, "emptied")
# Returns an edge event may still concern (an expired or called-off one: a drop-off
# reported late, made before the edge had the release).
_SEEN = (*_OPEN, "expired", "cancelled")
# Returns the shopper or staff may still call off: nothing is in the compartment yet.
_CANCELLABLE = ("requested", "return_pending")
# The edge events a return follows.
EVENT_CAUSES = frozenset({"returned_dropped", "return_emptied", "return_expired"})
_ORDER_STATES_HOLDING = [
    s.value for s in (S.STAGED, S.ASSIGNED, S.READY_FOR_PICKUP, S.EXPIRED, S.EXCEPTION)
]
Ident = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]


class LockerReturnItemIn(BaseModel):
    epc: str = Field(min_length=1, max_length=128)
    condition: Literal["resellable", "damaged"] = "resellable"


class LockerReturnIn(BaseModel):
    items: list[LockerReturnItemIn] = Field(min_length=1, max_length=200)
    size: CompartmentSize = Field(default="small", description="the smallest that fits")
    bank: Ident | None = Field(default=None, description="default: any bank of the store")


def view(row: Row[Any] | dict[str, Any]) -> dict[str, Any]:
    r = row if isinstance(row, dict) else row._asdict()
    shown: dict[str, Any] = {
        "id": r["id"],
        "order_id": r["order_id"],
        "store": r["store_id"],
        "bank": r["bank"],
        "compartment": r["compartment"],
        "state": r["state"],
        "epcs": [item["epc"] for item in r["items"]],
        "items": list(r["items"]),
        "expires_at": iso(r["expires_at"]),
        "reason": r["reason"],
        "created_at": iso(r["created_at"]),
        "dropped_at": iso(r["dropped_at"]),
        "emptied_at": iso(r["emptied_at"]),
        "completed_at": iso(r["completed_at"]),
        "task": None,
    }
    if r["state"] == "returned_in_locker":
        shown["task"] = f"empty compartment {r['bank']}/{r['compartment']}"
    return shown


async def of_order(connection: Any, order_id: str) -> list[dict[str, Any]]:
    t = tables.locker_returns
    rows = (
        await connection.execute(select(t).where(t.c.order_id == order_id).order_by(t.c.id))
    ).all()
    return [view(row) for row in rows]


def status_of(returns: list[dict[str, Any]]) -> str | None:
    """What the order shows: its newest locker return's state (None without one)."""
    return returns[-1]["state"] if returns else None


# ---------------------------------------------------------------- routes


def add_return_routes(router: APIRouter, domain: LockersDomain) -> None:
    @router.post(
        "/orders/{order_id}/locker-return", status_code=201, responses=error_responses(409)
    )
    async def start_locker_return(
        order_id: str, body: LockerReturnIn, principal: Shopping
    ) -> dict[str, Any]:
        """Return items of a collected order into a locker compartment. Answers the
        compartment and the drop-off code, ONCE (only a keyed check of it is kept); the
        return is `return_pending` when the edge has it, and the code opens the
        compartment until `expires_at`."""
        async with domain.transaction() as tx:
            order = await orders.load(tx, order_id)
            if order is None or not principal.may_see(order.store_id):
                raise ApiError(404, "not_found", f"order {order_id!r} does not exist")
            if order.state != S.COLLECTED.value:
                raise ApiError(
                    409, "conflict", f"order {order_id} is {order.state}: only collected returns"
                )
            t = tables.locker_returns
            active = (
                await tx.connection.execute(
                    select(t.c.id).where(t.c.order_id == order_id, t.c.state.in_(ACTIVE))
                )
            ).first()
            if active is not None:
                raise ApiError(
                    409, "conflict", f"order {order_id} has locker return {active.id} under way"
                )
            epcs = [item.epc for item in body.items]
            await _check_items(tx, order, epcs)
            bank, compartment = await _free_compartment(tx, domain, order.store_id, body)
            config = domain.banks[(order.store_id, bank)]
            now = utc_now()
            expiry = now + timedelta(hours=domain.options.hold_hours)
            inserted = await tx.connection.execute(
                insert(t).values(
                    order_id=order_id,
                    store_id=order.store_id,
                    node_id=config.node,
                    bank=bank,
                    compartment=compartment,
                    state="requested",
                    items=[item.model_dump() for item in body.items],
                    key_check="",
                    expires_at=expiry,
                    created_at=now,
                    updated_at=now,
                )
            )
            return_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            key = domain.key_of(order.store_id, bank)
            grant = Grant.make(bank, compartment, return_id, expiry)
            command = await commands.send(
                tx,
                store=order.store_id,
                node=config.node,
                bank=bank,
                compartment=compartment,
                name=RETURN,
                args={
                    "order_ref": order_id,
                    "order_seq": return_id,
                    "expiry": grant.expiry.isoformat(),
                },
                expiry_s=domain.options.command_expiry_s,
                order_id=order_id,
            )
            await tx.connection.execute(
                update(t)
                .where(t.c.id == return_id)
                .values(
                    key_check=key_check(key, grant),
                    expires_at=grant.expiry,
                    correlation_id=command.correlation_id,
                )
            )
            r = tables.order_returns
            await tx.connection.execute(
                insert(r),
                [
                    {
                        "order_id": order_id,
                        "store_id": order.store_id,
                        "epc": item.epc,
                        "method": "locker",
                        "bank": bank,
                        "compartment": compartment,
                        "condition": item.condition,
                        "status": "expected",
                        "created_at": now,
                    }
                    for item in body.items
                ],
            )
            row = (await tx.connection.execute(select(t).where(t.c.id == return_id))).one()
            shown = view(row)
            tx.change("locker_return", order.store_id, shown)
            log.info(
                "order %s: locker return %d into %s/%s", order_id, return_id, bank, compartment
            )
            return {**shown, "code": dropoff_code(key, grant, config.code_digits)}

    @router.post("/orders/{order_id}/locker-return/cancel", responses=error_responses(404, 409))
    async def cancel_locker_return(order_id: str, principal: Shopping) -> dict[str, Any]:
        """Call off the order's locker return before anything is dropped off: the edge is
        told to free the compartment (its drop-off code opens nothing any more) and the
        items are given back. 409 once a parcel is in the compartment (staff empty it)."""
        async with domain.transaction() as tx:
            order = await orders.load(tx, order_id)
            if order is None or not principal.may_see(order.store_id):
                raise ApiError(404, "not_found", f"order {order_id!r} does not exist")
            t = tables.locker_returns
            row = (
                await tx.connection.execute(
                    select(t)
                    .where(t.c.order_id == order_id, t.c.state.in_(ACTIVE))
                    .order_by(t.c.id.desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                raise ApiError(409, "conflict", f"order {order_id} has no locker return under way")
            if row.state not in _CANCELLABLE:
                raise ApiError(
                    409,
                    "conflict",
                    f"locker return {row.id} is {row.state}: the parcel is in"
                    f" {row.bank}/{row.compartment}, staff empty it",
                )
            await commands.send(
                tx,
                store=row.store_id,
                node=row.node_id,
                bank=row.bank,
                compartment=row.compartment,
                name=commands.RELEASE,
                args={"order_ref": order_id},
                expiry_s=domain.options.command_expiry_s,
                order_id=order_id,
            )
            await _give_back_items(tx, row)
            reason = f"called off by {principal.name}"
            await _move(tx, row, "cancelled", reason=reason)
            log.info("order %s: locker return %d %s", order_id, row.id, reason)
            fresh = (await tx.connection.execute(select(t).where(t.c.id == row.id))).one()
            return view(fresh)

    @router.get("/stores/{store}/lockers/returns")
    async def list_locker_returns(
        store: str,
        principal: Reader,
        state: Annotated[
            str | None, Query(max_length=24, description="e.g. returned_in_locker")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Locker returns, newest first; those `returned_in_locker` carry the staff task
        ("empty compartment bank/compartment")."""
        principal.check_store(store)
        t = tables.locker_returns
        query = select(t).where(t.c.store_id == store)
        if state is not None:
            query = query.where(t.c.state == state)
        async with domain.transaction() as tx:
            rows = (await tx.connection.execute(query.order_by(t.c.id.desc()).limit(limit))).all()
        return [view(row) for row in rows]


async def _check_items(tx: DomainTx, order: Row[Any], epcs: list[str]) -> None:
    if len(set(epcs)) != len(epcs):
        raise ApiError(422, "invalid_request", "an EPC is listed twice")
    r = tables.order_returns
    known = (
        (
            await tx.connection.execute(
                select(r.c.epc).where(r.c.order_id == order.order_id, r.c.epc.in_(epcs))
            )
        )
        .scalars()
        .all()
    )
    if known:
        raise ApiError(
            409, "conflict", f"already returned on order {order.order_id}: {', '.join(known)}"
        )
    ordered: dict[str, int] = defaultdict(int)
    for line in order.items:
        ordered[str(line["gtin"])] += int(line.get("quantity", 1))
    before = (
        await tx.connection.execute(
            select(func.count()).select_from(r).where(r.c.order_id == order.order_id)
        )
    ).scalar_one()
    if before + len(epcs) > sum(ordered.values()):
        raise ApiError(
            409,
            "conflict",
            f"order {order.order_id} had {sum(ordered.values())} unit(s); {before} already"
            " returned",
        )


async def _free_compartment(
    tx: DomainTx, domain: LockersDomain, store: str, body: LockerReturnIn
) -> tuple[str, str]:
    """The smallest free compartment of at least `body.size`: the mirror says available,
    empty, no flags, and no order or other return holds or is being given it."""
    banks = [b for (s, b) in domain.banks if s == store and (body.bank in (None, b))]
    if not banks:
        where = f"locker bank {body.bank}" if body.bank else "locker banks"
        raise ApiError(409, "no_locker", f"store {store!r} has no {where}")
    c = tables.compartments
    rows = (
        await tx.connection.execute(
            select(c).where(c.c.store_id == store, c.c.bank.in_(banks), c.c.state == "available")
        )
    ).all()
    taken = await taken_compartments(tx, store)
    wanted = SIZE_RANK[body.size]
    fitting = []
    for row in rows:
        if row.occupied or row.flags or (row.bank, row.compartment) in taken:
            continue
        size = domain.banks[(store, row.bank)].compartment_sizes.get(row.compartment, "medium")
        if SIZE_RANK[size] >= wanted:
            fitting.append((SIZE_RANK[size], row.bank, row.compartment))
    if not fitting:
        raise ApiError(
            409, "no_compartment", f"no free {body.size} (or larger) compartment in store {store}"
        )
    _, bank, compartment = min(fitting)
    return bank, compartment


async def taken_compartments(tx: DomainTx, store: str) -> set[tuple[str, str]]:
    """(bank, compartment) an order or a locker return holds or is being given."""
    o, t = tables.orders, tables.locker_returns
    by_orders = await tx.connection.execute(
        select(o.c.bank, o.c.compartment).where(
            o.c.store_id == store,
            o.c.compartment.is_not(None),
            o.c.state.in_(_ORDER_STATES_HOLDING),
        )
    )
    by_returns = await tx.connection.execute(
        select(t.c.bank, t.c.compartment).where(t.c.store_id == store, t.c.state.in_(ACTIVE))
    )
    return {(r.bank, r.compartment) for r in [*by_orders, *by_returns]}


# ---------------------------------------------------------------- ingest hooks


async def resend(tx: DomainTx, domain: LockersDomain, store: str, node: str, bank: str) -> int:
    """On a node's birth, `locker.return` again for every drop-off still pending there, with
    the same grant: an edge that kept it changes nothing, one that lost its state file takes
    it back (the shopper's code opens again), and one where the parcel went in meanwhile
    refuses it (the grant is spent; the `returned_dropped` event follows from its outbox)."""
    t = tables.locker_returns
    pending = (
        await tx.connection.execute(
            select(t).where(
                t.c.store_id == store,
                t.c.bank == bank,
                t.c.node_id == node,
                t.c.state == "return_pending",
                t.c.expires_at > utc_now(),
            )
        )
    ).all()
    for row in pending:
        await commands.send(
            tx,
            store=store,
            node=node,
            bank=bank,
            compartment=row.compartment,
            name=RETURN,
            args={
                "order_ref": row.order_id,
                "order_seq": row.id,
                "expiry": as_utc(row.expires_at).isoformat(),
            },
            expiry_s=domain.options.command_expiry_s,
            order_id=row.order_id,
        )
    return len(pending)


async def on_ack(tx: DomainTx, ack: CommandAck) -> None:
    """The edge's final answer to `locker.return`."""
    t = tables.locker_returns
    row = (
        await tx.connection.execute(
            select(t).where(t.c.correlation_id == ack.correlation_id, t.c.store_id == ack.store)
        )
    ).first()
    if row is None or row.state != "requested":
        return
    if ack.status is AckStatus.DONE:
        await _move(tx, row, "return_pending")
        return
    reason = f"locker.return {ack.status}: {ack.reason}"
    log.warning("locker return %d of order %s failed: %s", row.id, row.order_id, reason)
    await _give_back_items(tx, row)
    await _move(tx, row, "failed", reason=reason)


async def on_event(tx: DomainTx, store: str, bank: str, event: CompartmentEvent) -> None:
    """A drop-off, an emptied compartment or an expired drop-off at the edge. Taken from
    every admitted event, live or replayed (dedup applies each once)."""
    if event.cause not in EVENT_CAUSES:
        return
    t = tables.locker_returns
    query = select(t).where(
        t.c.store_id == store,
        t.c.bank == bank,
        t.c.compartment == event.compartment,
        t.c.state.in_(_SEEN),
    )
    if event.order_ref is not None:  # a compartment that became free names no order
        query = query.where(t.c.order_id == event.order_ref)
    row = (await tx.connection.execute(query.order_by(t.c.id.desc()).limit(1))).first()
    if row is None:
        log.warning(
            "locker event %s at %s/%s/%s: no locker return there; ignored",
            event.cause,
            store,
            bank,
            event.compartment,
        )
        return
    if event.cause == "returned_dropped" and row.state in (
        "requested",
        "return_pending",
        "expired",
        "cancelled",
    ):
        # `requested`: the drop-off event overtook the ack; `expired`: the cloud's sweep
        # gave up while the node was offline; `cancelled`: the parcel went in before the
        # edge had the release. It happened all the same: the locker wins.
        if row.state in ("expired", "cancelled"):
            log.warning(
                "locker return %d of order %s: dropped off, reported after it was %s",
                row.id,
                row.order_id,
                row.state,
            )
            await _take_back_items(tx, row)
        await _move(tx, row, "returned_in_locker", dropped_at=event.at, reason=None)
        log.info(
            "order %s: return dropped off in %s/%s; staff task: empty it",
            row.order_id,
            bank,
            event.compartment,
        )
    elif event.cause == "return_emptied" and row.state == "returned_in_locker":
        await _move(tx, row, "emptied", emptied_at=event.at)
        await settle(tx, store)
    elif event.cause == "return_expired" and row.state in ("requested", "return_pending"):
        await _give_back_items(tx, row)
        await _move(tx, row, "expired", reason="nothing was dropped off before the expiry")


async def expire_due(tx: DomainTx, now: datetime) -> int:
    """Drop-offs whose code expired without the edge saying so (offline then): `expired`,
    their items given back. The edge's own `return_expired` does the same when it can."""
    t = tables.locker_returns
    due = (
        await tx.connection.execute(
            select(t).where(t.c.state.in_(("requested", "return_pending")), t.c.expires_at <= now)
        )
    ).all()
    for row in due:
        await _give_back_items(tx, row)
        await _move(
            tx, row, "expired", reason="the drop-off code expired (the edge did not report it)"
        )
    return len(due)


async def settle(tx: DomainTx, *stores: str) -> None:
    """Emptied returns whose EPCs have all been read back in are complete (one query for
    the stores of an ingest batch: almost always no row)."""
    t, r = tables.locker_returns, tables.order_returns
    emptied = (
        await tx.connection.execute(
            select(t).where(t.c.store_id.in_(sorted(stores)), t.c.state == "emptied")
        )
    ).all()
    for row in emptied:
        waiting = (
            await tx.connection.execute(
                select(func.count())
                .select_from(r)
                .where(
                    r.c.order_id == row.order_id,
                    r.c.epc.in_(_epcs(row)),
                    r.c.status == "expected",
                )
            )
        ).scalar_one()
        if waiting == 0:
            await _move(tx, row, "return_completed", completed_at=utc_now())


async def _give_back_items(tx: DomainTx, row: Row[Any]) -> None:
    r = tables.order_returns
    await tx.connection.execute(
        delete(r).where(
            r.c.order_id == row.order_id,
            r.c.epc.in_(_epcs(row)),
            r.c.status == "expected",
            r.c.method == "locker",
        )
    )


async def _take_back_items(tx: DomainTx, row: Row[Any]) -> None:
    """The items of a return the cloud had given up, which reached the locker after all."""
    r = tables.order_returns
    known = set(
        (
            await tx.connection.execute(
                select(r.c.epc).where(r.c.order_id == row.order_id, r.c.epc.in_(_epcs(row)))
            )
        )
        .scalars()
        .all()
    )
    missing = [item for item in row.items if item["epc"] not in known]
    if missing:
        await tx.connection.execute(
            insert(r),
            [
                {
                    "order_id": row.order_id,
                    "store_id": row.store_id,
                    "epc": item["epc"],
                    "method": "locker",
                    "bank": row.bank,
                    "compartment": row.compartment,
                    "condition": item["condition"],
                    "status": "expected",
                    "created_at": utc_now(),
                }
                for item in missing
            ],
        )


def _epcs(row: Row[Any]) -> list[str]:
    return [str(item["epc"]) for item in row.items]


async def _move(tx: DomainTx, row: Row[Any], state: str, **values: Any) -> None:
    t = tables.locker_returns
    now = utc_now()
    await tx.connection.execute(
        update(t).where(t.c.id == row.id).values(state=state, updated_at=now, **values)
    )
    shown = view({**row._asdict(), "state": state, "updated_at": now, **values})
    tx.change("locker_return", row.store_id, shown)
    tx.change(
        "order",
        row.store_id,
        {
            "order_id": row.order_id,
            "store": row.store_id,
            "state": S.COLLECTED.value,
            "return_status": state,
            "bank": row.bank,
            "compartment": row.compartment,
            "at": iso(as_utc(now)),
            "cause": f"locker_return:{state}",
        },
    )
