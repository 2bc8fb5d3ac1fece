"""The demo's online orders, driven through the cloud's order API as a webshop and the store
team would (docs/orders.md): the webshop places each order with `POST /api/v1/orders` under
its own `external_id` (a placement whose answer was lost is resent with the same id and
gets the same order back); staff start picking, read the pick list, take an item off the
shelf it names and scan it, stage the order with the scanned EPC (sold when the order is
collected), then a locker order is loaded by a courier and collected with the code the
cloud hands the shopper, a counter order is made `ready` and handed over, a curbside order
is handed over when the shopper checks in. Some are cancelled by the shopper, some never
collected (they expire at the end of the demo's short hold).

People act on the simulated devices, never on edge code: a picker takes a tagged item off
its shelf (RFID sees it go), a courier puts the parcel in the compartment the edge unlocked,
the shopper types the code on the locker's keypad (a pty) and takes the parcel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
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
Method = Literal["locker", "counter", "curbside"]
STATE_TIMEOUT_S = 30.0
# Of every five orders: three collected (locker, counter, curbside), one cancelled by the
# shopper before picking, one never collected (it expires at the end of the hold). Stores
# start at different turns, so the first orders of three stores already end all three ways.
FATES: tuple[tuple[Fate, Method], ...] = (
    ("collect", "locker"),
    ("no_show", "locker"),
    ("cancel", "counter"),
    ("collect", "counter"),
    ("collect", "curbside"),
)


@dataclass
class OrderStats:
    placed: int = 0
    refused: int = 0  # the cloud said no (stock, no compartment): the reason is logged
    collected: int = 0
    cancelled: int = 0
    left_to_expire: int = 0
    staged_with_epcs: int = 0  # the scanned EPC was accepted: it is sold when collected
    staged_without_epcs: int = 0  # the cloud refused it (the reason is logged)
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
    # the webshop's order ids: unique per run, so a demo on a kept database starts afresh
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

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
        fate, method = FATES[self.turn % len(FATES)]
        try:
            await self._order(self.turn, fate, method)
        except (httpx.HTTPError, LatchedError, TimeoutError, KeyError) as exc:
            self.stats.failed += 1
            log.warning("demo order at %s did not complete: %r", self.store.id, exc)

    async def _order(self, number: int, fate: Fate, method: Method) -> None:
        item = self._item_on_a_shelf()
        if item is None:
            return
        epc, gtin = item
        shopper = self.rng.choice(self.shoppers) if self.shoppers else None
        order_id = await self._place(number, gtin, method, shopper)
        if order_id is None:
            return
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        if fate == "cancel":
            await self._act(
                order_id, "cancel", self.webshop_key, reason="the shopper cancelled online"
            )
            self.stats.cancelled += 1
            return
        await self._act(order_id, "pick")
        scanned = await self._take_off_the_shelf(order_id, epc)
        await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        if not await self._stage(order_id, scanned):
            return
        if method == "locker":
            collected = await self._through_the_locker(order_id, fate)
        else:
            collected = await self._over_the_counter(order_id, fate, method)
        if collected:
            self.stats.collected += 1

    async def _place(
        self, number: int, gtin: str, method: Method, shopper: str | None
    ) -> str | None:
        body = {
            "external_id": f"demo-{self.store.id}-{self.run_id}-{number}",
            "store": self.store.id,
            "lines": [{"gtin": gtin, "quantity": 1}],
            "method": method,
            "shopper": shopper,
        }
        for attempt in range(2):
            try:
                placed = await self.api.post(
                    "/api/v1/orders", headers=_key(self.webshop_key), json=body
                )
                break
            except httpx.TransportError:
                if attempt:
                    raise
                # the answer was lost, not necessarily the order: the same id again is safe
                await asyncio.sleep(0.5)
        if placed.status_code not in (200, 201):
            self.stats.refused += 1
            log.info("demo order at %s refused: %s", self.store.id, placed.text[:300])
            return None
        order_id: str = placed.json()["order_id"]
        self.stats.placed += 1
        self.stats.states[order_id] = placed.json()["state"]
        return order_id

    async def _take_off_the_shelf(self, order_id: str, wanted: str) -> str:
        """The picker goes where the pick list says and scans the item they take: one of
        the EPCs it names if it is there, else the one the order was made from."""
        listed = await self.api.get(
            f"/api/v1/orders/{order_id}/pick-list", headers=_key(self.staff_key)
        )
        listed.raise_for_status()
        named = [
            epc
            for line in listed.json()["lines"]
            for location in line["locations"]
            for epc in location["epcs"]
        ]
        epc = next((e for e in named if e in self.store.world.items), wanted)
        if epc in self.store.world.items:
            self.store.shelves._remove(epc, "picked")
        return epc

    async def _stage(self, order_id: str, epc: str) -> bool:
        """Stage with the scanned EPC; refused (say RFID never reported it), staff stage
        without it, as the staff app lets them. False: the order could not be staged."""
        staged = await self._act(order_id, "stage", epcs=[epc], expect=(200, 409))
        if staged.status_code == 200:
            self.stats.staged_with_epcs += 1
            return True
        error = staged.json().get("error")
        if error == "pick_refused":
            log.info("demo order %s: scan refused: %s", order_id, staged.json().get("detail"))
            staged = await self._act(order_id, "stage", expect=(200, 409))
            if staged.status_code == 200:
                self.stats.staged_without_epcs += 1
                return True
            error = staged.json().get("error")
        self.stats.refused += 1
        log.info("demo order %s not staged (%s): %s", order_id, error, staged.text[:300])
        await self._act(order_id, "cancel", reason=f"could not be staged: {error}")
        self.stats.cancelled += 1
        return False

    async def _through_the_locker(self, order_id: str, fate: Fate) -> bool:
        shown = await self._until(order_id, "assigned")
        bank, compartment = shown["bank"], shown["compartment"]
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
            return False
        await asyncio.sleep(self.rng.uniform(*self.pickup_after_s))
        issued = await self.api.post(
            f"/api/v1/orders/{order_id}/pickup-code", headers=_key(self.webshop_key)
        )
        issued.raise_for_status()
        await Person(driver.bank).collect(driver.simulator, board, lock, issued.json()["code"])
        await self._until(order_id, "collected")
        return True

    async def _over_the_counter(self, order_id: str, fate: Fate, method: Method) -> bool:
        await self._act(order_id, "ready")
        if fate == "no_show":
            self.stats.left_to_expire += 1
            return False
        await asyncio.sleep(self.rng.uniform(*self.pickup_after_s))
        if method == "curbside":
            await self._act(order_id, "arrived", self.webshop_key, note="bay 2")
        await self._act(order_id, "collect")
        return True

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

    async def _act(
        self,
        order_id: str,
        action: str,
        key: str | None = None,
        *,
        expect: tuple[int, ...] = (200,),
        **body: Any,
    ) -> httpx.Response:
        response = await self.api.post(
            f"/api/v1/orders/{order_id}/{action}", headers=_key(key or self.staff_key), json=body
        )
        if response.status_code not in expect:
            response.raise_for_status()
            raise httpx.HTTPStatusError(
                f"{action} {order_id}: {response.status_code} {response.text[:200]}",
                request=response.request,
                response=response,
            )
        if response.status_code == 200:
            self.stats.states[order_id] = response.json()["state"]
        return response

    async def _until(self, order_id: str, state: str) -> dict[str, Any]:
        deadline = time.monotonic() + STATE_TIMEOUT_S
        while True:
            response = await self.api.get(
                f"/api/v1/orders/{order_id}", headers=_key(self.staff_key)
            )
            response.raise_for_status()
            shown: dict[str, Any] = response.json()
            now = shown["state"]
            self.stats.states[order_id] = now
            if now == state:
                return shown
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} is {now}, not {state}, after 30 s")
            await asyncio.sleep(0.3)


def _key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
