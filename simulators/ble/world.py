"""A store floor with scanners, and shoppers whose phones advertise while they walk.

Radio model: log-distance path loss, RSSI = P(1 m) - 10 n log10(d) + N(0, sigma), with
n = 2.2 and sigma = 3 dB by default, a receiver floor of -100 dBm and random drops. Phones
advertise every 100 ms-1 s (per phone) with +-10 % jitter plus BLE's 0-10 ms advDelay.

App phones advertise an iBeacon with the app's UUID and a rotating token in major/minor,
and change token and MAC address together every `rotate_s`. Other phones advertise
assorted non-app data from random MACs; the edge must filter them.

Ground truth: a shopper is "in" a zone while within `zone_radius_m` of its centre.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from simulators.ble.adverts import (
    APPLE,
    bluez_advert,
    ibeacon_payload,
    random_private_address,
)

DEFAULT_APP_UUID = uuid.UUID("5f2dd896-b886-4549-ae01-e41acd7a354a")
SIM_EPOCH = 1_780_000_000.0  # a fixed start time keeps runs reproducible


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class SimScanner:
    adapter: str
    zone: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class FloorPlan:
    zones: tuple[Zone, ...]
    scanners: tuple[SimScanner, ...]
    zone_radius_m: float = 2.5
    entrance: tuple[float, float] = (-12.0, 0.0)

    def zone(self, zone_id: str) -> Zone:
        return next(z for z in self.zones if z.id == zone_id)

    def zone_at(self, x: float, y: float) -> str | None:
        for zone in self.zones:
            if math.hypot(x - zone.x, y - zone.y) <= self.zone_radius_m:
                return zone.id
        return None


def default_floor_plan() -> FloorPlan:
    """Six zones 12 m apart in two rows, one scanner at the centre of each."""
    names = ["entrance", "produce", "dairy", "bakery", "electronics", "checkout"]
    zones = tuple(Zone(name, 12.0 * (i % 3), 12.0 * (i // 3)) for i, name in enumerate(names))
    scanners = tuple(SimScanner(f"hci{i}", z.id, z.x, z.y) for i, z in enumerate(zones))
    return FloorPlan(zones, scanners)


@dataclass(frozen=True, slots=True)
class RadioModel:
    path_loss_n: float = 2.2
    noise_db: float = 3.0
    floor_dbm: float = -100.0
    drop_p: float = 0.1

    def rssi(self, power_1m: float, distance_m: float, rng: random.Random) -> int | None:
        d = max(distance_m, 0.3)
        value = power_1m - 10 * self.path_loss_n * math.log10(d) + rng.gauss(0, self.noise_db)
        if value < self.floor_dbm or rng.random() < self.drop_p:
            return None
        return round(value)


@dataclass(frozen=True, slots=True)
class Waypoint:
    x: float
    y: float
    pause_s: float = 0.0


class Walk:
    """Piecewise-linear movement through waypoints at a walking speed, pausing at each."""

    def __init__(self, start: float, waypoints: Sequence[Waypoint], speed_mps: float = 1.2):
        if not waypoints:
            raise ValueError("a walk needs at least one waypoint")
        self.start = start
        # (t_begin, t_end, x0, y0, x1, y1) legs, pauses are legs that do not move
        self.legs: list[tuple[float, float, float, float, float, float]] = []
        t = start
        x, y = waypoints[0].x, waypoints[0].y
        for point in waypoints:
            travel = math.hypot(point.x - x, point.y - y) / speed_mps
            if travel > 0:
                self.legs.append((t, t + travel, x, y, point.x, point.y))
                t += travel
            x, y = point.x, point.y
            if point.pause_s > 0:
                self.legs.append((t, t + point.pause_s, x, y, x, y))
                t += point.pause_s
        self.end = t
        self._last = (x, y)

    def position(self, t: float) -> tuple[float, float] | None:
        """Where the walker is at `t`, or None before the start / after the end."""
        if t < self.start or t > self.end:
            return None
        for begin, end, x0, y0, x1, y1 in self.legs:
            if begin <= t <= end:
                f = 0.0 if end == begin else (t - begin) / (end - begin)
                return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        return self._last


@dataclass(slots=True)
class Phone:
    name: str
    walk: Walk
    app: bool
    interval_s: float
    power_1m: int
    rotate_s: float
    rng: random.Random
    app_uuid: uuid.UUID = DEFAULT_APP_UUID
    junk: Callable[[random.Random], dict[int, bytes]] | None = None
    # identity epochs: (valid_from, address, token)
    identities: list[tuple[float, str, str]] = field(default_factory=list)

    def identity(self, t: float) -> tuple[str, int, int]:
        """(address, major, minor) valid at `t`; rotates every `rotate_s`."""
        epoch = max(0, int((t - self.walk.start) // self.rotate_s))
        while len(self.identities) <= epoch:
            address = random_private_address(self.rng)
            major, minor = self.rng.randrange(65536), self.rng.randrange(65536)
            valid_from = self.walk.start + len(self.identities) * self.rotate_s
            self.identities.append((valid_from, address, f"{major:04x}{minor:04x}"))
        _, address, token = self.identities[epoch]
        return address, int(token[:4], 16), int(token[4:], 16)

    def beacon_id(self, t: float) -> str | None:
        if not self.app:
            return None
        _, major, minor = self.identity(t)
        return f"app:{major:04x}{minor:04x}"

    def next_gap(self) -> float:
        return self.interval_s * self.rng.uniform(0.9, 1.1) + self.rng.uniform(0, 0.01)

    def advert_payload(self, t: float) -> tuple[str, dict[int, bytes]]:
        address, major, minor = self.identity(t)
        if self.app:
            return address, {APPLE: ibeacon_payload(self.app_uuid, major, minor, self.power_1m)}
        assert self.junk is not None
        return address, self.junk(self.rng)


def _junk_data(rng: random.Random) -> dict[int, bytes]:
    """Typical non-app traffic: Apple Nearby/Continuity, someone else's iBeacon, Microsoft CDP."""
    choice = rng.randrange(3)
    if choice == 0:
        return {APPLE: bytes([0x10, 0x05]) + rng.randbytes(5)}
    if choice == 1:
        other = uuid.UUID(int=rng.getrandbits(128))
        return {APPLE: ibeacon_payload(other, rng.randrange(65536), rng.randrange(65536), -59)}
    return {0x0006: bytes([0x01, 0x09, 0x20]) + rng.randbytes(20)}


Deliver = Callable[[str, BLEDevice, AdvertisementData], object]


class StoreSimulation:
    """Moves phones through the store and hands each heard advert to `deliver(adapter, ...)`
    at its exact simulated time (`self.now` is set before each delivery)."""

    def __init__(
        self,
        plan: FloorPlan,
        *,
        seed: int = 1,
        radio: RadioModel | None = None,
        app_uuid: uuid.UUID = DEFAULT_APP_UUID,
        start: float = SIM_EPOCH,
    ) -> None:
        self.plan = plan
        self.radio = radio or RadioModel()
        self.rng = random.Random(seed)
        self.app_uuid = app_uuid
        self.now = start
        self.start = start
        self.phones: list[Phone] = []
        self._queue: list[tuple[float, int]] = []

    def clock(self) -> float:
        return self.now

    # -- population

    def add_phone(
        self, name: str, walk: Walk, *, app: bool = True, rotate_s: float = 900.0
    ) -> Phone:
        phone = Phone(
            name=name,
            walk=walk,
            app=app,
            interval_s=self.rng.uniform(0.1, 1.0),
            power_1m=self.rng.randint(-62, -56),
            rotate_s=rotate_s,
            rng=random.Random(self.rng.getrandbits(64)),
            app_uuid=self.app_uuid,
            junk=None if app else _junk_data,
        )
        self.phones.append(phone)
        heapq.heappush(
            self._queue, (walk.start + self.rng.uniform(0, phone.interval_s), len(self.phones) - 1)
        )
        return phone

    def add_random_shoppers(self, count: int, *, non_app: int = 0, within_s: float = 60.0) -> None:
        zone_ids = [z.id for z in self.plan.zones]
        for i in range(count + non_app):
            visits = self.rng.sample(zone_ids, k=self.rng.randint(2, min(4, len(zone_ids))))
            points = [Waypoint(*self.plan.entrance)]
            for zone_id in visits:
                zone = self.plan.zone(zone_id)
                # stand near the shelf, within a metre of the zone centre
                angle = self.rng.uniform(0, 2 * math.pi)
                r = self.rng.uniform(0, 1.0)
                points.append(
                    Waypoint(
                        zone.x + r * math.cos(angle),
                        zone.y + r * math.sin(angle),
                        pause_s=self.rng.uniform(25, 60),
                    )
                )
            points.append(Waypoint(*self.plan.entrance))
            walk = Walk(self.start + self.rng.uniform(0, within_s), points)
            app = i < count
            self.add_phone(f"shopper-{i}" if app else f"other-{i}", walk, app=app)

    def prune_finished(self) -> int:
        """Drop phones that have left the store (keeps a long-running demo bounded)."""
        keep = [i for i, p in enumerate(self.phones) if p.walk.end >= self.now]
        new_index = {old: new for new, old in enumerate(keep)}
        removed = len(self.phones) - len(keep)
        self.phones = [self.phones[i] for i in keep]
        self._queue = [(t, new_index[i]) for t, i in self._queue if i in new_index]
        heapq.heapify(self._queue)
        return removed

    @property
    def end(self) -> float:
        return max((p.walk.end for p in self.phones), default=self.start)

    # -- ground truth

    def true_zone(self, phone: Phone, t: float) -> str | None:
        position = phone.walk.position(t)
        return None if position is None else self.plan.zone_at(*position)

    # -- running

    def run_until(self, t_end: float, deliver: Deliver) -> int:
        """Emit every advert up to `t_end`; returns how many receptions were delivered."""
        delivered = 0
        while self._queue and self._queue[0][0] <= t_end:
            t, index = heapq.heappop(self._queue)
            phone = self.phones[index]
            if t <= phone.walk.end:
                heapq.heappush(self._queue, (t + phone.next_gap(), index))
            position = phone.walk.position(t)
            if position is None:
                continue
            self.now = t
            address, manufacturer_data = phone.advert_payload(t)
            for scanner in self.plan.scanners:
                distance = math.hypot(position[0] - scanner.x, position[1] - scanner.y)
                rssi = self.radio.rssi(phone.power_1m, distance, self.rng)
                if rssi is None:
                    continue
                device, adv = bluez_advert(
                    scanner.adapter, address, rssi, manufacturer_data=manufacturer_data
                )
                deliver(scanner.adapter, device, adv)
                delivered += 1
        self.now = max(self.now, t_end)
        return delivered
