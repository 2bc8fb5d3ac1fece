"""The live mirror of compartments, from LockerEvents, LockerSnapshot and Birth."""

from __future__ import annotations

from datetime import datetime

from cloud.domains import DomainTx
from cloud.lockers import tables
from cloud.state.db import upsert
from protocols.messages import CompartmentEvent, CompartmentStatus

ALARM_CAUSES = frozenset({"forced_open", "door_ajar", "code_burst_alarm"})


async def mirror(
    tx: DomainTx,
    store: str,
    node: str,
    bank: str,
    items: list[CompartmentStatus] | list[CompartmentEvent],
    at: datetime,
) -> None:
    """Write the latest state of each compartment and tell SSE subscribers."""
    rows = {}
    for item in items:
        rows[item.compartment] = {
            "store_id": store,
            "bank": bank,
            "compartment": item.compartment,
            "node_id": node,
            "state": item.state.value,
            "door_open": item.door_open,
            "occupied": item.occupied,
            "flags": [f.value for f in item.flags],
            "order_ref": item.order_ref,
            "updated_at": getattr(item, "at", at),
        }
    await upsert(
        tx.connection,
        tables.compartments,
        list(rows.values()),
        keys=("store_id", "bank", "compartment"),
    )
    for row in rows.values():
        tx.change(
            "compartment",
            store,
            {
                "store": store,
                "bank": bank,
                "compartment": row["compartment"],
                "state": row["state"],
                "flags": row["flags"],
                "door_open": row["door_open"],
                "occupied": row["occupied"],
            },
        )
