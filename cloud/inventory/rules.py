"""The alert rules, as pure functions (no database): what an alert key should be now.

- low stock: raise when on hand <= reorder point; clear when on hand > reorder point +
  hysteresis; in between, leave it as it is (a count that wobbles by one item around the
  reorder point does not flap the alert). No reorder point: clear.
- misplaced: a planned shelf (one with a planogram) holding a count > 0 of a GTIN its
  planogram does not list. Cleared when the count is 0, or the planogram allows it (or is
  removed).
- replenish (a staff task, not an alert): open when the sales floor holds fewer than the
  floor minimum while the backroom holds some; done when the floor is back at or over the
  minimum; an empty backroom opens nothing and leaves an open task open.
- exit_unsold: an EPC seen at an exit read point that no sale (or collected order) lists.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum


class AlertType(StrEnum):
    LOW_STOCK = "low_stock"
    MISPLACED = "misplaced"
    EXIT_UNSOLD = "exit_unsold"


# the alert types decided from the shelf counts (exit_unsold is decided per item event)
COUNT_ALERTS = (AlertType.LOW_STOCK.value, AlertType.MISPLACED.value)


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


def replenish(floor: int, backroom: int, minimum: int) -> Action:
    if floor >= minimum:
        return Action.CLOSE
    if backroom > 0:
        return Action.OPEN
    return Action.KEEP


def units_to_move(floor: int, backroom: int, minimum: int) -> int:
    """What the task asks to move: the floor's shortfall, at most what the backroom holds."""
    return max(0, min(minimum - floor, backroom))


def open_key(alert_type: AlertType, store: str, shelf: str | None, gtin: str) -> str:
    """The key that allows one open alert at a time ("*" = the whole store)."""
    return f"{alert_type.value}|{store}|{shelf or '*'}|{gtin}"
