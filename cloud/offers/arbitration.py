"""Cross-node arbitration: one shopper is in one zone of a store at a time.

Each edge node already arbitrates between its own scanners (edge/ble/presence.py). When
several nodes cover one store, each may report the same shopper in its own zone: only the
cloud sees all of them. The rule (the edge's, applied to events instead of adverts):

- an enter in another zone within `window_s` of the current zone's enter is a conflict:
  the new zone wins only with an RSSI at least `switch_db` stronger;
- past the window the latest enter wins (the shopper walked on);
- a dwell counts only in the current zone; an exit only from the current zone and by the
  token that holds it (a rotated-away token's late exit does not end the presence).

Pure functions, so the rule is tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from protocols.messages import PresenceKind

NO_RSSI = -1000.0


@dataclass(frozen=True, slots=True)
class Placement:
    zone: str | None
    token: str
    rssi: float | None
    zone_at: datetime | None
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    fires: bool  # the event stands after arbitration: campaigns may trigger on it
    placement: Placement
    why: str  # for metrics: placed, same_zone, lost_conflict, switched, stale_exit, ...


def arbitrate(
    current: Placement | None,
    kind: PresenceKind,
    zone: str,
    token: str,
    rssi: float | None,
    at: datetime,
    *,
    window_s: float,
    switch_db: float,
) -> Verdict:
    seen = max(at, current.last_seen_at) if current else at
    if kind is PresenceKind.ENTER:
        placed = Placement(zone, token, rssi, at, seen)
        if current is None or current.zone is None:
            return Verdict(True, placed, "placed")
        if current.zone == zone:
            # Another scanner or node of the same zone, or the phone's next token.
            return Verdict(False, replace(current, token=token, last_seen_at=seen), "same_zone")
        assert current.zone_at is not None
        if at < current.zone_at:
            return Verdict(False, replace(current, last_seen_at=seen), "out_of_order")
        if (at - current.zone_at).total_seconds() < window_s:
            stronger = (rssi if rssi is not None else NO_RSSI) >= (
                current.rssi if current.rssi is not None else NO_RSSI
            ) + switch_db
            if not stronger:
                return Verdict(False, replace(current, last_seen_at=seen), "lost_conflict")
        return Verdict(True, placed, "switched")
    if current is None or current.zone != zone:
        return Verdict(False, current or Placement(None, token, None, None, at), "not_here")
    if kind is PresenceKind.DWELL:
        return Verdict(True, replace(current, last_seen_at=seen), "dwell")
    if current.token != token:
        return Verdict(False, current, "stale_exit")
    return Verdict(True, replace(current, zone=None, zone_at=None, last_seen_at=seen), "exited")
