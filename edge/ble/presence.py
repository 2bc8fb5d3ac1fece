"""Zone presence: smoothed RSSI per (beacon, scanner) turned into enter / dwell / exit.

We think in zones, not metres: RSSI indoors is too noisy for distance, but "which scanner
hears this phone clearly, and clearly better than the others" is robust. Each scanner
belongs to one zone (config); several scanners may cover the same zone.

Rules (defaults in `PresenceParams`):
- RSSI is smoothed per (beacon, scanner) with an EWMA (alpha 0.3);
- a link *qualifies* for a zone once its smoothed RSSI stays >= -70 dBm for 3 samples or
  5 s in a row;
- an absent beacon enters the zone of its strongest qualified link;
- a present beacon switches zone only when another zone's qualified link is >= 6 dB stronger
  than the current zone (hysteresis: no ping-pong between neighbouring scanners);
- it exits when every link of its zone is below -78 dBm (8 dB below the enter threshold,
  so a shopper at the edge of a zone does not flap), or unseen for
  max(30 s, 3 x the beacon's observed advertising gap);
- one dwell event once it has been seen in the zone for 20 s.

Retention: a beacon's whole state (links, gap estimate) is forgotten once it has been unseen
for `retention_s`; nothing about it survives that.

The engine is pure and single-threaded, driven by explicit timestamps (an injectable clock),
so it is deterministic and can arbitrate across any set of scanners that feed it: the
scanners of one edge node here, or every node of a store in the cloud.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from protocols.messages import PresenceEvent, PresenceKind, ZoneOccupancy


@dataclass(frozen=True, slots=True)
class PresenceParams:
    alpha: float = 0.3
    enter_dbm: float = -70.0
    enter_samples: int = 3
    enter_s: float = 5.0
    switch_db: float = 6.0
    exit_dbm: float = -78.0
    unseen_min_s: float = 30.0
    unseen_gap_factor: float = 3.0
    dwell_s: float = 20.0
    retention_s: float = 300.0
    max_beacons: int = 10_000
    max_pending_events: int = 50_000

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if self.exit_dbm > self.enter_dbm:
            raise ValueError("exit_dbm must be at or below enter_dbm (hysteresis)")
        if self.retention_s < self.unseen_min_s:
            raise ValueError(
                "retention_s must be >= unseen_min_s, or a present beacon is forgotten"
            )


@dataclass(slots=True)
class _Link:
    """One beacon as heard by one scanner."""

    smoothed: float
    last_seen: float
    gap_s: float | None = None  # EWMA of the advertising gap as this scanner hears it
    above_since: float | None = None
    above_samples: int = 0

    def qualified(self, params: PresenceParams) -> bool:
        if self.above_since is None:
            return False
        return (
            self.above_samples >= params.enter_samples
            or self.last_seen - self.above_since >= params.enter_s
        )

    def unseen_timeout(self, params: PresenceParams) -> float:
        gap = self.gap_s or 0.0
        return max(params.unseen_min_s, params.unseen_gap_factor * gap)


@dataclass(slots=True)
class _Beacon:
    links: dict[str, _Link] = field(default_factory=dict)  # scanner -> link
    last_seen: float = 0.0
    zone: str | None = None
    entered_at: float = 0.0
    dwell_sent: bool = False


WallTime = Callable[[float], datetime]
"""Turns an engine timestamp into the event's UTC time."""


def epoch_wall_time(t: float) -> datetime:
    """For engines fed with seconds since the epoch (tests, the simulator)."""
    return datetime.fromtimestamp(t, UTC)


class PresenceEngine:
    """Feed `observe()` with samples and call `tick()` about once a second; take the
    events with `drain()` (`transitions_pending` says whether an enter or exit is among
    them). Times are float seconds on any steady clock; `wall_time` turns them into event
    times (the default reads them as seconds since the epoch)."""

    def __init__(
        self,
        zones: Mapping[str, str],
        params: PresenceParams | None = None,
        wall_time: WallTime = epoch_wall_time,
    ) -> None:
        if not zones:
            raise ValueError("at least one scanner -> zone mapping is needed")
        self.params = params or PresenceParams()
        self.wall_time = wall_time
        self.zone_of = dict(zones)  # scanner -> zone
        self._beacons: dict[str, _Beacon] = {}
        self._pending: deque[PresenceEvent] = deque()
        self._transitions_pending = 0  # enters and exits in _pending (a switch is both)
        self.dropped_unknown_scanner = 0
        self.dropped_over_capacity = 0
        self.dropped_events = 0
        self.forgotten = 0

    # ------------------------------------------------------------------ input

    def observe(self, beacon: str, scanner: str, rssi: float, t: float) -> None:
        if scanner not in self.zone_of:
            self.dropped_unknown_scanner += 1
            return
        state = self._beacons.get(beacon)
        if state is None:
            if len(self._beacons) >= self.params.max_beacons:
                self.dropped_over_capacity += 1
                return
            state = self._beacons[beacon] = _Beacon()
        self._update_link(state, scanner, rssi, t)
        state.last_seen = max(state.last_seen, t)
        self._arbitrate(beacon, state, t)

    def _update_link(self, state: _Beacon, scanner: str, rssi: float, t: float) -> None:
        params = self.params
        link = state.links.get(scanner)
        if link is None or t - link.last_seen > link.unseen_timeout(params):
            # first sample, or back after a long silence: the old average means nothing now
            link = state.links[scanner] = _Link(smoothed=rssi, last_seen=t, gap_s=None)
        else:
            gap = max(0.0, t - link.last_seen)
            link.gap_s = gap if link.gap_s is None else link.gap_s + 0.2 * (gap - link.gap_s)
            link.smoothed += params.alpha * (rssi - link.smoothed)
            link.last_seen = t
        if link.smoothed >= params.enter_dbm:
            if link.above_since is None:
                link.above_since, link.above_samples = t, 0
            link.above_samples += 1
        else:
            link.above_since, link.above_samples = None, 0

    # ------------------------------------------------------------------ decisions

    def _fresh(self, link: _Link, t: float) -> bool:
        return t - link.last_seen <= link.unseen_timeout(self.params)

    def _zone_strength(self, state: _Beacon, zone: str, t: float) -> float:
        """The strongest fresh link into `zone`, qualified or not; -inf if none."""
        return max(
            (
                link.smoothed
                for scanner, link in state.links.items()
                if self.zone_of[scanner] == zone and self._fresh(link, t)
            ),
            default=-math.inf,
        )

    def _best_qualified(self, state: _Beacon, t: float) -> tuple[str, float] | None:
        best: tuple[str, float] | None = None
        for scanner, link in state.links.items():
            usable = self._fresh(link, t) and link.qualified(self.params)
            if usable and (best is None or link.smoothed > best[1]):
                best = (self.zone_of[scanner], link.smoothed)
        return best

    def _arbitrate(self, beacon: str, state: _Beacon, t: float) -> None:
        params = self.params
        if state.zone is not None:
            current = self._zone_strength(state, state.zone, t)
            if current < params.exit_dbm:
                self._exit(beacon, state, t, rssi=current if math.isfinite(current) else None)
            else:
                best = self._best_qualified(state, t)
                clearly_elsewhere = (
                    best is not None
                    and best[0] != state.zone
                    and best[1] >= current + params.switch_db
                )
                if best is not None and clearly_elsewhere:
                    self._exit(beacon, state, t, rssi=current)
                    self._enter(beacon, state, best[0], best[1], t)
                    return
                self._maybe_dwell(beacon, state, t, current)
                return
        best = self._best_qualified(state, t)
        if best is not None:
            self._enter(beacon, state, best[0], best[1], t)

    def _enter(self, beacon: str, state: _Beacon, zone: str, rssi: float, t: float) -> None:
        state.zone, state.entered_at, state.dwell_sent = zone, t, False
        self._push(PresenceKind.ENTER, beacon, zone, t, rssi=rssi)

    def _exit(self, beacon: str, state: _Beacon, t: float, rssi: float | None) -> None:
        assert state.zone is not None
        self._push(
            PresenceKind.EXIT, beacon, state.zone, t, rssi=rssi, dwell_s=t - state.entered_at
        )
        state.zone = None

    def _maybe_dwell(self, beacon: str, state: _Beacon, t: float, rssi: float | None) -> None:
        if state.zone is None or state.dwell_sent:
            return
        stayed = state.last_seen - state.entered_at  # observed presence, not assumed
        if stayed >= self.params.dwell_s:
            state.dwell_sent = True
            self._push(PresenceKind.DWELL, beacon, state.zone, t, rssi=rssi, dwell_s=stayed)

    def _push(
        self,
        kind: PresenceKind,
        beacon: str,
        zone: str,
        t: float,
        *,
        rssi: float | None = None,
        dwell_s: float | None = None,
    ) -> None:
        if len(self._pending) >= self.params.max_pending_events:
            # Nobody drained for a long time: keep the newest, they describe the present.
            if self._pending.popleft().kind is not PresenceKind.DWELL:
                self._transitions_pending -= 1
            self.dropped_events += 1
        if kind is not PresenceKind.DWELL:
            self._transitions_pending += 1
        self._pending.append(
            PresenceEvent(
                kind=kind,
                beacon=beacon,
                zone=zone,
                rssi=None if rssi is None else round(rssi, 1),
                dwell_s=None if dwell_s is None else round(max(0.0, dwell_s), 3),
                at=self.wall_time(t),
            )
        )

    # ------------------------------------------------------------------ time passing

    def tick(self, t: float) -> None:
        """Apply the time-based rules: unseen exits, dwell, retention."""
        forget: list[str] = []
        for beacon, state in self._beacons.items():
            expired = t - state.last_seen >= self.params.retention_s
            if state.zone is not None and expired:
                self._exit(beacon, state, t, rssi=None)  # retention wins over everything
            if state.zone is not None:
                strength = self._zone_strength(state, state.zone, t)
                if not math.isfinite(strength):
                    self._exit(beacon, state, t, rssi=None)  # unseen for too long
                    self._arbitrate(beacon, state, t)  # maybe it is clearly in another zone
                else:
                    self._maybe_dwell(beacon, state, t, strength)
            if state.zone is None and expired:
                forget.append(beacon)
        for beacon in forget:
            del self._beacons[beacon]
        self.forgotten += len(forget)

    def drain(self) -> list[PresenceEvent]:
        events = list(self._pending)
        self._pending.clear()
        self._transitions_pending = 0
        return events

    @property
    def transitions_pending(self) -> int:
        """Enters and exits (a zone switch is one of each) waiting for `drain()`: the events
        a shopper waits for, which the driver sends early instead of on its batching tick."""
        return self._transitions_pending

    # ------------------------------------------------------------------ state

    def zone_of_beacon(self, beacon: str) -> str | None:
        state = self._beacons.get(beacon)
        return None if state is None else state.zone

    def knows(self, beacon: str) -> bool:
        return beacon in self._beacons

    @property
    def tracked(self) -> int:
        return len(self._beacons)

    def occupancy(self) -> list[ZoneOccupancy]:
        """Every configured zone, with the beacons in it (empty zones too, so a consumer can
        clear them)."""
        members: dict[str, list[str]] = {zone: [] for zone in sorted(set(self.zone_of.values()))}
        for beacon, state in self._beacons.items():
            if state.zone is not None:
                members[state.zone].append(beacon)
        return [ZoneOccupancy(zone=zone, beacons=sorted(b)) for zone, b in members.items()]
