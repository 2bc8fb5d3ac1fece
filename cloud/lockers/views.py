"""How an order looks to the outside (SSE `order` changes, notifications, the API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def order_view(order: dict[str, Any], state: str, at: datetime) -> dict[str, Any]:
    """`{order_id, store, state, bank, compartment, hold_until, at}`: the `order` change."""
    return {
        "order_id": order["order_id"],
        "store": order["store_id"],
        "state": state,
        "bank": order.get("bank"),
        "compartment": order.get("compartment"),
        "hold_until": iso(order.get("hold_until")),
        "at": iso(at),
    }
