"""People in a simulated store, acting on the simulators' worlds (never on the edge code).

Shoppers arrive at random (Poisson), browse, take a few items off the shelves, then either
buy them (gone) or put them down again, sometimes on the wrong shelf. Staff walk a round
every `restock_every_s`: they refill shelves under `restock_below` of their stock with the
planogram's products and put some misplaced items back. Online orders land in a locker
compartment (courier loads it) and their shopper collects them later with the pickup code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

from protocols.messages import Command, CompartmentState, utc_now
from protocols.pickup import keypad_code
from simulators.drivers.cu16 import SimLockerDriver
from simulators.llrp.world import World
from simulators.locker.board import LatchedError
from simulators.locker.people import Person
from simulators.locker.server import LockerSimulator
from simulators.scenario.model import Behaviour, Span

log = logging.getLogger(__name__)


def draw(rng: random.Random, span: Span) -> float:
    return rng.uniform(span.low, span.high)


@dataclass
class ShelfCounters:
    shoppers: int = 0
    picked: int = 0
    bought: int = 0
    put_back: int = 0
    misplaced: int = 0
    restocked: int = 0
    tidied: int = 0


@dataclass
class ShelfPeople:
    """Shoppers and staff at the RFID shelves of one store."""

    world: World
    behaviour: Behaviour
    stock_per_shelf: int
    rng: random.Random
    reasons: list[str] = field(default_factory=list)  # why, for each world change (truth)
    counters: ShelfCounters = field(default_factory=ShelfCounters)

    def __post_init__(self) -> None:
        # Where each item belongs (its planogram shelf): where it was first stocked.
        self.home: dict[str, int] = dict(self.world.items)

    # ------------------------------------------------------------------ changes

    def _remove(self, epc: str, why: str) -> None:
        self.world.remove(epc, time.time())
        self.reasons.append(why)

    def _place(self, epc: str, antenna: int, why: str) -> None:
        # `move` also puts back an item that had left the shelves (same EPC, same tag).
        self.world.move(epc, antenna, time.time())
        self.reasons.append(why)

    def _stock(self, antenna: int) -> None:
        epc = self.world.add(antenna, time.time())
        self.reasons.append("restocked")
        self.home[epc] = antenna

    # ------------------------------------------------------------------ people

    async def shoppers(self) -> None:
        rate = self.behaviour.shoppers_per_minute / 60.0
        if rate <= 0:
            return
        visits: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(rate))
                task = asyncio.create_task(self.shopper())
                visits.add(task)
                task.add_done_callback(visits.discard)
        finally:
            for task in visits:
                task.cancel()
            await asyncio.gather(*visits, return_exceptions=True)

    async def shopper(self) -> None:
        b = self.behaviour
        self.counters.shoppers += 1
        await asyncio.sleep(draw(self.rng, b.browse_s) / 2)
        basket: list[str] = []
        for _ in range(round(draw(self.rng, b.picks))):
            if not self.world.items:
                break
            epc = self.rng.choice(list(self.world.items))
            self._remove(epc, "picked")
            basket.append(epc)
            self.counters.picked += 1
        await asyncio.sleep(draw(self.rng, b.browse_s) / 2)
        antennas = self.world.config.antennas
        for epc in basket:
            if self.rng.random() < b.buy_p:
                self.counters.bought += 1
                self.home.pop(epc, None)  # already off the shelf since it was picked
            elif antennas > 1 and self.rng.random() < b.misplace_p:
                wrong = [a for a in range(1, antennas + 1) if a != self.home[epc]]
                self._place(epc, self.rng.choice(wrong), "misplaced")
                self.counters.misplaced += 1
            else:
                self._place(epc, self.home[epc], "put_back")
                self.counters.put_back += 1

    async def staff(self) -> None:
        b = self.behaviour
        while True:
            await asyncio.sleep(b.restock_every_s * self.rng.uniform(0.8, 1.2))
            self.staff_round()

    def staff_round(self) -> None:
        b = self.behaviour
        for epc, antenna in list(self.world.items.items()):
            if antenna != self.home.get(epc, antenna) and self.rng.random() < b.tidy_p:
                self._place(epc, self.home[epc], "tidied")
                self.counters.tidied += 1
        on_shelf = [0] * (self.world.config.antennas + 1)
        for antenna in self.world.items.values():
            on_shelf[antenna] += 1
        threshold = b.restock_below * self.stock_per_shelf
        for antenna in range(1, self.world.config.antennas + 1):
            if on_shelf[antenna] < threshold:
                for _ in range(self.stock_per_shelf - on_shelf[antenna]):
                    self._stock(antenna)
                    self.counters.restocked += 1


@dataclass
class OrderCounters:
    placed: int = 0
    loaded: int = 0
    collected: int = 0
    refused: int = 0


@dataclass
class LockerPeople:
    """Online orders collected from the store's locker bank.

    The simulator plays the order system: it reserves a compartment on the edge driver
    (as the cloud's `locker.reserve` command would), a courier loads it, and the shopper
    types the pickup code at the keypad later. The code is derived from the bank's key
    exactly as the cloud derives it for an order, and the edge checks it the same way."""

    driver: SimLockerDriver
    store: str
    node: str
    behaviour: Behaviour
    rng: random.Random
    counters: OrderCounters = field(default_factory=OrderCounters)

    async def orders(self) -> None:
        rate = self.behaviour.orders_per_hour / 3600.0
        if rate <= 0:
            return
        trips: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(rate))
                task = asyncio.create_task(self.order())
                trips.add(task)
                task.add_done_callback(trips.discard)
        finally:
            for task in trips:
                task.cancel()
            await asyncio.gather(*trips, return_exceptions=True)

    async def order(self) -> None:
        simulator: LockerSimulator | None = getattr(self.driver, "simulator", None)
        free = [
            c
            for c in self.driver.compartments.values()
            if c.state is CompartmentState.AVAILABLE and not c.flags
        ]
        if simulator is None or not free:
            return  # the bank is full (or not started): the order goes to the counter
        compartment = self.rng.choice(free)
        self.counters.placed += 1
        seq = self.counters.placed
        expiry = (utc_now() + timedelta(hours=2)).replace(microsecond=0)
        reserve: dict[str, object] = {
            "compartment": compartment.id,
            "order_ref": f"sim-{self.store}-{seq}",
            "expiry": expiry.isoformat(),
            "order_seq": seq,
        }
        person = Person(self.driver.bank)
        try:
            loading: dict[str, object] = {"compartment": compartment.id}
            for name, args in (("locker.reserve", reserve), ("locker.open_for_loading", loading)):
                outcome = await self.driver.handle_command(self._command(name, args))
                if not outcome.ok:
                    self.counters.refused += 1
                    log.info("%s: %s refused: %s", self.store, name, outcome.reason)
                    return
            grant = self.driver.grant_for(compartment.id)
            assert grant is not None, "locker.reserve with order_seq sets the grant"
            code = keypad_code(self.driver.key, grant, self.driver.options.code_digits)
            await person.load(compartment.board, compartment.lock)
            self.counters.loaded += 1
            await asyncio.sleep(draw(self.rng, self.behaviour.pickup_after_s))
            await person.collect(simulator, compartment.board, compartment.lock, code)
            self.counters.collected += 1
        except LatchedError as exc:
            self.counters.refused += 1
            log.info("%s: order %d not completed: %s", self.store, seq, exc)

    def _command(self, name: str, args: dict[str, object]) -> Command:
        return Command.model_validate(
            {
                "store": self.store,
                "node": self.node,
                "seq": 0,
                "name": name,
                "correlation_id": hashlib.sha256(f"{name}{time.time_ns()}".encode()).hexdigest()[
                    :32
                ],
                "expires_at": utc_now() + timedelta(minutes=1),
                "target": self.driver.device,
                "args": args,
            }
        )


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
