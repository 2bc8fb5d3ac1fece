"""Advert in, presence out: decode, drop what is not allowlisted, feed the presence engine.

Synchronous and cheap: it runs inside bleak's detection callback. The device's address is
never read here; the only identity that survives this function is the allowlisted beacon id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge.ble.frames import DecodeStats, decode_advertisement
from edge.ble.presence import PresenceEngine
from edge.ble.privacy import Allowlist

Clock = Callable[[], float]
"""A steady clock in seconds; injectable so tests and the simulator control time."""

# A Pi has no RTC: its wall clock jumps when NTP syncs after boot. Timing rules (unseen,
# dwell, watchdog) therefore run on the monotonic clock, and only event times are wall time.
system_clock: Clock = time.monotonic


def system_wall_time(t: float) -> datetime:
    """The wall time of monotonic instant `t`, read against the current wall clock."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - t)


class RateMeter:
    """Events per second over a sliding window of one-second buckets."""

    def __init__(self, window_s: int = 10) -> None:
        self._window = window_s
        self._buckets: deque[tuple[int, int]] = deque()  # (second, count)

    def add(self, t: float) -> None:
        second = int(t)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + 1)
        else:
            self._buckets.append((second, 1))
            while len(self._buckets) > self._window + 1:
                self._buckets.popleft()

    def rate(self, t: float) -> float:
        now = int(t)
        total = sum(count for second, count in self._buckets if now - self._window < second <= now)
        return total / self._window


class AdvertPipeline:
    def __init__(self, allowlist: Allowlist, engine: PresenceEngine, clock: Clock) -> None:
        self.allowlist = allowlist
        self.engine = engine
        self.clock = clock
        self.stats = DecodeStats()
        self.rate = RateMeter()
        self.adverts = 0
        self.frames = 0
        self.not_allowlisted = 0
        self.accepted = 0

    def handle(self, scanner: str, device: BLEDevice, adv: AdvertisementData) -> None:
        del device  # the address is personal data: it is deliberately not used at all
        t = self.clock()
        self.adverts += 1
        self.rate.add(t)
        for frame in decode_advertisement(adv, self.stats):
            self.frames += 1
            beacon = self.allowlist.beacon_id(frame)
            if beacon is None:
                self.not_allowlisted += 1
                continue
            self.accepted += 1
            self.engine.observe(beacon, scanner, float(adv.rssi), t)

    def metrics(self) -> dict[str, float]:
        t = self.clock()
        values: dict[str, float] = {
            "adverts_per_s": self.rate.rate(t),
            "adverts_total": self.adverts,
            "frames_total": self.frames,
            "not_beacon_total": self.stats.not_beacon,
            "not_allowlisted_total": self.not_allowlisted,
            "accepted_total": self.accepted,
            "decode_errors_total": self.stats.error_total,
            "beacons_tracked": self.engine.tracked,
            "beacons_forgotten_total": self.engine.forgotten,
            "presence_dropped_over_capacity_total": self.engine.dropped_over_capacity,
            "presence_dropped_events_total": self.engine.dropped_events,
        }
        for reason, count in self.stats.errors.items():
            values[f"decode_errors.{reason.value}"] = count
        return values
