"""The alert rules, as pure functions (no database): what an alert key should be now.

- low stock: raise when on hand <= reorder point; clear when on hand > reorder point +
  hysteresis; in between, leave it as it is (a count that wobbles by one item around the
  reorder point does not flap the alert). No reorder point: clear.
- misplaced: a planned shelf (one with a planogram) holding a count > 0 of a GTIN its
  planogram does not list. Cleared when the count is 0, or the planogram allows it (or is
  removed).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum


class AlertType(StrEnum):
    LOW_STOCK = "low_stock"
    MISPLACED = "misplaced"


class AlertState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Action(StrEnum):
    OPEN = "open"  # should be raised (raise it unless it is)
    CLOSE = "close"  # should not be raised (clear it if it is)
    KEEP = "keep"  # inside the hysteresis band: leave it as it is


def low_stock(on_hand: int, reorder_point: int | None, hysteresis: int) -> Action:
    if reorder_point is None:
        return Action.CLOSE
    if on_hand <= reorder_point:
        return Action.OPEN
    if on_hand > reorder_point + hysteresis:
        return Action.CLOSE
    return Action.KEEP


def misplaced(count: int, gtin: str, planogram: Collection[str] | None) -> Action:
    if planogram is None or count <= 0 or gtin in planogram:
        return Action.CLOSE
    return Action.OPEN


def open_key(alert_type: AlertType, store: str, shelf: str | None, gtin: str) -> str:
    """The key that allows one open alert at a time ("*" = the whole store)."""
    return f"{alert_type.value}|{store}|{shelf or '*'}|{gtin}"
