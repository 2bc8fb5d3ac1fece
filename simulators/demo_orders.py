"""The demo's online orders, driven through the cloud's order API as a webshop and the store
team would: placed, picked, staged into a locker, loaded by a courier, collected with the
code the cloud hands the shopper; some are cancelled, some never collected (they expire at
the end of the demo's short hold).

The order routes used are today's lockers API (`POST /api/v1/stores/{store}/orders`,
`/orders/{id}/state`, `/assign`, `/pickup-code`, the compartment's `open-for-loading`); this
module is the only place the demo speaks them, so moving to the order intake API
(`POST /api/v1/orders` and its actions) is a change here only.

People act on the simulated devices, never on edge code: a picker takes a tagged item off
its shelf (RFID sees it go), a courier puts the parcel in the compartment the edge unlocked,
the shopper types the code on the locker's keypad (a pty) and takes the parcel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from edge.rfid.epc import decode_epc
from simulators.drivers.cu16 import SimLockerDriver
from simulators.locker.board import LatchedError
from simulators.locker.people import Person
from simulators.scenario.store import SimulatedStore

log = logging.getLogger(__name__)

Fate = Literal["collect", "cancel", "no_show"]
STATE_TIMEOUT_S = 30.0
# Of every five orders: three collected, one cancelled before picking, one never collected
# (it expires at the end of the hold). Stores start at different turns, so the first orders
# of three stores already end all three ways.
FATES: tuple[Fate, ...] = ("collect", "no_show", "cancel", "collect", "collect")


@dataclass
class OrderStats:
    placed: int = 0
    refused: int = 0  # the cloud said no (stock, no compartment): the reason is logged
    collected: int = 0
    cancelled: int = 0
    left_to_expire: int = 0
    failed: int = 0  # a step did not happen in time: logged with the order id
    states: dict[str, str] = field(default_factory=dict)  # order id -> last state seen


@dataclass
class DemoOrders:
    """One store's online orders, every `every_s` on average (Poisson)."""

    api: httpx.AsyncClient  # base URL of the cloud, no key
    staff_key: str
    webshop_key: str
    store: SimulatedStore
    shoppers: list[str]  # inboxes of the store's app shoppers (order updates go there)
    rng: random.Random
    every_s: float = 20.0
    pickup_after_s: tuple[float, float] = (3.0, 12.0)
    stats: OrderStats = field(default_factory=OrderStats)
    turn: int = 0  # where in FATES this store starts

    async def run(self, first_after_s: float = 1.0) -> None:
        trips: set[asyncio.Task[None]] = set()
        try:
            await asyncio.sleep(first_after_s)
            while True:
                task = asyncio.create_task(self.order(), name=f"demo-order-{self.store.id}")
                trips.add(task)
                task.add_done_callback(trips.discard)
                await asyncio.sleep(self.rng.expovariate(1.0 / self.every_s))
        finally:
            for task in trips:
                task.cancel()
            await asyncio.gather(*trips, return_exceptions=True)

    async def order(self) -> None:
        # A fixed rhythm rather than dice: every kind of ending shows within a few orders.
        self.turn += 1
        fate: Fate = FATES[self.turn % len(FATES)]
        try:
            await self._order(fate)
        except (httpx.HTTPError, LatchedError, TimeoutError, KeyError) as exc:
            self.stats.failed += 1
            log.warning("demo order at %s did not complete: %r", self.store.id, exc)

    async def _order(self, fate: Fate) -> None:
        item = self._item_on_a_shelf()
        if item is None:
            return
        epc, gtin = item
        shopper = self.rng.choice(self.shoppers) if self.shoppers else None
        placed = await self.api.post(
            f"/api/v1/stores/{self.store.id}/orders",
            headers=_key(self.webshop_key),
            json={"items": [{"gtin": gtin, "quantity": 1}], "shopper": shopper},
        )
        if placed.status_code != 201:
            self.stats.refused += 1
            log.info("demo order at %s refused: %s", self.store.id, placed.text[:300])
            return
        order_id = placed.json()["order_id"]
        self.stats.placed += 1
        self.stats.states[order_id] = "created"
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        if fate == "cancel":
            await self._state(order_id, "cancelled", reason="the shopper cancelled online")
            self.stats.cancelled += 1
            return
        await self._state(order_id, "picking")
        if epc in self.store.world.items:  # the picker takes the item off its shelf
            self.store.shelves._remove(epc, "picked")
        await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        await self._state(order_id, "staged")
        assigned = await self.api.post(
            f"/api/v1/orders/{order_id}/assign", headers=_key(self.staff_key), json={}
        )
        if assigned.status_code != 202:
            self.stats.refused += 1
            log.info("demo order %s not assigned: %s", order_id, assigned.text[:300])
            await self._state(order_id, "cancelled", reason="no free compartment")
            return
        bank, compartment = assigned.json()["bank"], assigned.json()["compartment"]
        await self._until(order_id, "assigned")
        opened = await self.api.post(
            f"/api/v1/stores/{self.store.id}/lockers/{bank}/{compartment}/open-for-loading",
            headers=_key(self.staff_key),
        )
        opened.raise_for_status()
        driver = self._driver()
        board, lock = driver.compartments[compartment].board, driver.compartments[compartment].lock
        await Person(driver.bank).load(board, lock)  # the courier
        await self._until(order_id, "ready_for_pickup")
        if fate == "no_show":
            self.stats.left_to_expire += 1
            return
        await asyncio.sleep(self.rng.uniform(*self.pickup_after_s))
        issued = await self.api.post(
            f"/api/v1/orders/{order_id}/pickup-code", headers=_key(self.webshop_key)
        )
        issued.raise_for_status()
        await Person(driver.bank).collect(driver.simulator, board, lock, issued.json()["code"])
        await self._until(order_id, "collected")
        self.stats.collected += 1

    def _item_on_a_shelf(self) -> tuple[str, str] | None:
        items = list(self.store.world.items)
        self.rng.shuffle(items)
        for epc in items[:20]:
            gtin = decode_epc(epc).gtin
            if gtin is not None:
                return epc, gtin
        return None

    def _driver(self) -> SimLockerDriver:
        if self.store.lockers is None:
            raise KeyError(f"store {self.store.id} has no locker bank")
        return self.store.lockers.driver

    async def _state(self, order_id: str, state: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"state": state}
        if reason is not None:
            body["reason"] = reason
        response = await self.api.post(
            f"/api/v1/orders/{order_id}/state", headers=_key(self.staff_key), json=body
        )
        response.raise_for_status()
        self.stats.states[order_id] = state

    async def _until(self, order_id: str, state: str) -> None:
        deadline = time.monotonic() + STATE_TIMEOUT_S
        while True:
            response = await self.api.get(
                f"/api/v1/orders/{order_id}", headers=_key(self.staff_key)
            )
            response.raise_for_status()
            now = response.json()["state"]
            self.stats.states[order_id] = now
            if now == state:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} is {now}, not {state}, after 30 s")
            await asyncio.sleep(0.3)


def _key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
