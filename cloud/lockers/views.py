"""How an order looks to the outside (SSE `order` changes, notifications, the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloud.api.timestamps import as_utc, iso_utc

__all__ = ["as_utc", "iso", "order_view"]


def iso(value: datetime | None) -> str | None:
    return iso_utc(value)


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
