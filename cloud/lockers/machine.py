"""The order state machine: which transitions exist, and nothing else (pure, no I/O).

    created ─► picking ─► staged ─► assigned ─► ready_for_pickup ─► collected
                            │          │          ▲   │
                            └──────────┼──────────┘   │   (counter, curbside: no compartment)
                                       │              │
                                       │              └─► expired ─► returned_to_stock
      cancelled ◄── any open state     └─► exception ◄── staged / assigned / ready / expired
                                           exception ─► staged (retry) / returned_to_stock
    expired, exception ─► collected: the locker saw the shopper take the parcel anyway

`assigned`: a compartment is reserved (the edge acked `locker.reserve`);
`ready_for_pickup`: the parcel is in, the code hash is at the edge, the shopper is told.
"""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    CREATED = "created"
    PICKING = "picking"
    STAGED = "staged"
    ASSIGNED = "assigned"
    READY_FOR_PICKUP = "ready_for_pickup"
    COLLECTED = "collected"
    EXPIRED = "expired"
    RETURNED_TO_STOCK = "returned_to_stock"
    CANCELLED = "cancelled"
    EXCEPTION = "exception"


S = OrderState
ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    S.CREATED: frozenset({S.PICKING, S.CANCELLED}),
    S.PICKING: frozenset({S.STAGED, S.CANCELLED, S.EXCEPTION}),
    # staged -> ready_for_pickup: counter and curbside orders, which need no compartment
    S.STAGED: frozenset({S.ASSIGNED, S.READY_FOR_PICKUP, S.CANCELLED, S.EXCEPTION}),
    S.ASSIGNED: frozenset({S.READY_FOR_PICKUP, S.EXPIRED, S.CANCELLED, S.EXCEPTION}),
    S.READY_FOR_PICKUP: frozenset({S.COLLECTED, S.EXPIRED, S.CANCELLED, S.EXCEPTION}),
    # collected after expired/exception: the edge saw the shopper take it (e.g. just before
    # the hold ended, reported after an outage during which the cloud expired the order)
    S.EXPIRED: frozenset({S.RETURNED_TO_STOCK, S.COLLECTED, S.EXCEPTION}),
    S.EXCEPTION: frozenset({S.STAGED, S.RETURNED_TO_STOCK, S.COLLECTED, S.CANCELLED}),
    S.COLLECTED: frozenset(),
    S.RETURNED_TO_STOCK: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, targets in ALLOWED.items() if not targets)
# Orders whose goods are still on the shelves: their units are reserved (cloud/inventory/
# stock.py) until the order leaves these states.
ON_SHELVES = frozenset({S.CREATED, S.PICKING})
# Orders that hold (or are about to hold) a compartment.
IN_LOCKER = frozenset({S.ASSIGNED, S.READY_FOR_PICKUP, S.EXPIRED, S.EXCEPTION})


# The order lifecycle the online channel sees (`status`), from the machine's finer states.
# `created` is `reserved` once the order's lines are reserved (cloud/inventory/stock.py),
# else `placed`; `exception` is shown as it is (a UI labels unknown strings, never fails).
STATUS: dict[OrderState, str] = {
    S.CREATED: "placed",
    S.PICKING: "picking",
    S.STAGED: "staged",
    S.ASSIGNED: "staged",
    S.READY_FOR_PICKUP: "ready",
    S.COLLECTED: "collected",
    S.EXPIRED: "expired",
    S.RETURNED_TO_STOCK: "expired",
    S.CANCELLED: "cancelled",
    S.EXCEPTION: "exception",
}
STATUSES = (
    "placed",
    "reserved",
    "picking",
    "staged",
    "ready",
    "collected",
    "expired",
    "cancelled",
    "exception",
)


def status_of(state: str, reserved: bool) -> str:
    if state == S.CREATED.value and reserved:
        return "reserved"
    return STATUS[OrderState(state)]


def states_of(status: str) -> list[str]:
    """The machine states behind a `status` (for filtering lists)."""
    if status == "reserved":
        return [S.CREATED.value]
    return [s.value for s, shown in STATUS.items() if shown == status]


class IllegalTransitionError(Exception):
    def __init__(self, order_id: str, current: OrderState, target: OrderState) -> None:
        allowed = ", ".join(sorted(ALLOWED[current])) or "nothing (final state)"
        super().__init__(
            f"order {order_id} is {current}; it cannot become {target} (from {current}: {allowed})"
        )
        self.current = current
        self.target = target


def check(order_id: str, current: OrderState, target: OrderState) -> None:
    if target not in ALLOWED[current]:
        raise IllegalTransitionError(order_id, current, target)
