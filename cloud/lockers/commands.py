"""Edge commands the lockers domain sends, recorded so their acks can be matched.

A command is a row in `locker_commands` (its `seq` numbers the Command message) and a
`Command` queued on the tx: it is published only if the transaction commits. The edge's
`CommandAck` updates the row; a row never moves backwards (a late `accepted` after `done`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import JsonValue
from sqlalchemy import Row, and_, insert, select, update

from cloud.domains import DomainTx
from cloud.lockers import tables
from protocols.messages import AckStatus, Command, CommandAck, new_message_id, utc_now

RESERVE = "locker.reserve"
SET_CODE = "locker.set_code"
OPEN_FOR_LOADING = "locker.open_for_loading"
OPEN = "locker.open"
OUT_OF_SERVICE = "locker.out_of_service"
RELEASE = "locker.release"  # the order no longer holds the compartment (cloud/lockers/holds.py)
HOLD = "locker.hold"  # the cloud's view of a hold, re-sent on every birth
_FINAL = [s.value for s in AckStatus if s.final]


async def send(
    tx: DomainTx,
    *,
    store: str,
    node: str,
    bank: str,
    compartment: str,
    name: str,
    args: dict[str, JsonValue],
    expiry_s: float,
    order_id: str | None = None,
) -> Command:
    now = utc_now()
    correlation_id = new_message_id()
    result = await tx.connection.execute(
        insert(tables.commands).values(
            correlation_id=correlation_id,
            order_id=order_id,
            store_id=store,
            node_id=node,
            bank=bank,
            compartment=compartment,
            name=name,
            status="sent",
            sent_at=now,
            updated_at=now,
        )
    )
    seq = int(result.inserted_primary_key[0])  # type: ignore[index]
    command = Command(
        store=store,
        node=node,
        seq=seq,
        name=name,
        correlation_id=correlation_id,
        expires_at=now + timedelta(seconds=expiry_s),
        target=bank,
        args={"compartment": compartment, **args},
    )
    tx.command(command)
    return command


async def record_ack(tx: DomainTx, ack: CommandAck) -> Row[Any] | None:
    """Store the ack on its command; the command's row if this ack is news (else None)."""
    t = tables.commands
    condition = and_(
        t.c.correlation_id == ack.correlation_id,
        t.c.store_id == ack.store,
        t.c.node_id == ack.node,
    )
    if ack.status.final:
        condition = and_(condition, t.c.status.not_in(_FINAL))
    else:
        condition = and_(condition, t.c.status == "sent")
    result = await tx.connection.execute(
        update(t)
        .where(condition)
        .values(status=ack.status.value, reason=ack.reason, updated_at=utc_now())
    )
    if result.rowcount == 0:
        return None
    return (
        await tx.connection.execute(select(t).where(t.c.correlation_id == ack.correlation_id))
    ).first()
