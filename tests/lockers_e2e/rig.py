"""The whole BOPIS path in one process: Mosquitto (real, persistent), the cloud runtime
(temp SQLite, API on a free port) and the edge runtime with a `sim-cu16` locker bank whose
board and keypad are real ptys."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from edge.config import create_drivers, load_edge_settings
from edge.runtime import EdgeRuntime
from simulators.drivers.cu16 import SimLockerDriver
from simulators.locker.people import Person
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.edge.helpers import edge_config
from tests.lockers_e2e.rfid_node import RFID_NODE
from tests.servers import MosquittoBroker

STORE, NODE, BANK = "store-042", "pi-1", "bank-1"  # STAFF_KEY may see store-042
KEY_ENV = "STOREGATE_TEST_LOCKER_KEY"
GTIN = "09506000134352"
TIMEOUT_S = 30.0

__all__ = ["OPS_KEY", "SHOPPER_KEY", "STAFF_KEY", "Rig", "running_rig"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Rig:
    def __init__(
        self,
        broker: MosquittoBroker,
        cloud: CloudRuntime,
        edge_config: Path,
        http: httpx.AsyncClient,
    ) -> None:
        self.broker = broker
        self.cloud = cloud
        self.edge_config = edge_config
        self.edge_state = edge_config.parent / "locker.sqlite3"
        self.http = http
        self.edge, self.edge_task = self._start_edge()

    def _start_edge(self, bank: Any = None) -> tuple[EdgeRuntime, asyncio.Task[int]]:
        settings = load_edge_settings(self.edge_config)
        drivers = create_drivers(settings)
        if bank is not None:
            # the same physical bank: doors, latches and parcels stay as they are
            driver = drivers[BANK]
            assert isinstance(driver, SimLockerDriver)
            driver.bank = bank
        edge = EdgeRuntime(
            settings,
            drivers,
            version="0.0.0-test",
            config_path=self.edge_config,
            handle_signals=False,
        )
        return edge, asyncio.create_task(edge.run())

    async def stop_edge(self) -> None:
        self.edge.stop()
        await asyncio.wait_for(self.edge_task, 30)

    async def restart_edge(self, while_down: Callable[[], None] = lambda: None) -> None:
        """Stop the edge runtime, run `while_down`, start a new one on the same bank and
        state file (what a process restart does), and wait for the cloud to take its birth."""
        bank = self.driver.bank
        before = await self.last_birth()
        await self.stop_edge()
        while_down()
        self.edge, self.edge_task = self._start_edge(bank)
        await self.eventually(self.last_birth, lambda at: at != before, "the new edge's birth")

    async def last_birth(self) -> str | None:
        nodes = await self.call("GET", f"/api/v1/stores/{STORE}/nodes")
        at: str | None = next(n["last_birth_at"] for n in nodes if n["node"] == NODE)
        return at

    @property
    def driver(self) -> SimLockerDriver:
        driver = self.edge.supervisors[BANK].driver
        assert isinstance(driver, SimLockerDriver)
        return driver

    def person(self) -> Person:
        return Person(self.driver.bank, step_s=0.6)

    async def call(
        self, method: str, path: str, key: str = STAFF_KEY, *, expect: int = 200, **kw: Any
    ) -> Any:
        response = await self.http.request(method, path, headers=bearer(key), **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    async def eventually(
        self, get: Callable[[], Any], check: Callable[[Any], bool], what: str
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        value: Any = None
        while asyncio.get_running_loop().time() < deadline:
            value = get()
            if asyncio.iscoroutine(value):
                value = await value
            if check(value):
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"{what} within {TIMEOUT_S}s; last: {value}")

    async def order(self, order_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", f"/api/v1/orders/{order_id}", SHOPPER_KEY)
        return body

    async def wait_state(self, order_id: str, state: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.eventually(
            lambda: self.order(order_id), lambda o: o["state"] == state, f"order {state}"
        )
        return body

    async def ready_order(self, lock: int = 0) -> tuple[str, str]:
        """An order through picking, staging, reservation and loading to ready: (id, code)."""
        created = await self.call(
            "POST",
            f"/api/v1/stores/{STORE}/orders",
            SHOPPER_KEY,
            expect=201,
            json={"items": [{"gtin": GTIN, "quantity": 1}], "shopper": "app-token-1"},
        )
        order_id = created["order_id"]
        for state in ("picking", "staged"):
            await self.call("POST", f"/api/v1/orders/{order_id}/state", json={"state": state})
        compartment = f"0-{lock + 1:02d}"
        assigned = await self.call(
            "POST",
            f"/api/v1/orders/{order_id}/assign",
            expect=202,
            json={"bank": BANK, "compartment": compartment},
        )
        assert (assigned["bank"], assigned["compartment"]) == (BANK, compartment)
        await self.wait_state(order_id, "assigned")  # the edge acked locker.reserve
        await self.call(
            "POST",
            f"/api/v1/stores/{STORE}/lockers/{BANK}/{compartment}/open-for-loading",
            expect=202,
        )
        await self.person().load(0, lock)  # the courier: parcel in, door shut
        await self.wait_state(order_id, "ready_for_pickup")  # loaded + code hash acked
        code = await self.call("POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY)
        return order_id, code["code"]


@asynccontextmanager
async def running_rig(
    tmp_path: Path,
    broker: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
    *,
    webhook_url: str | None = None,
    locker_options: dict[str, Any] | None = None,
    hold_hours: float = 2,
    reserve_stock: bool = False,
) -> AsyncIterator[Rig]:
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    lockers: dict[str, Any] = {
        "banks": [{"store": STORE, "node": NODE, "bank": BANK, "codes_key_env": KEY_ENV}],
        "hold_hours": hold_hours,
        # by default this store has a locker bank and no RFID shelves: nothing would ever be
        # available (reservations are tested in tests/inventory/test_reservations.py); with
        # reserve_stock the test's RfidNode (tests/lockers_e2e/rfid_node.py) counts shelves
        "reserve_stock": reserve_stock,
    }
    if webhook_url is not None:
        lockers["webhook"] = {"url": webhook_url, "backoff_base_s": 0.3, "max_attempts": 4}
    cloud_dir = tmp_path / "cloud"
    cloud_dir.mkdir()
    config = cloud_config(broker.port, cloud_dir, stores={STORE: [NODE, RFID_NODE]})
    config["mqtt"] |= {"reconnect_min_s": 0.5, "reconnect_max_s": 1}
    config["domains"] = {"lockers": lockers}
    cloud = CloudRuntime(CloudSettings(**config))
    await cloud.start()

    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    locker_options = {"state_path": str(edge_dir / "locker.sqlite3"), **(locker_options or {})}
    device = {
        "id": BANK,
        "kind": "locker_bank",
        "driver": "sim-cu16",
        "options": {
            "boards": [0],
            "locks_per_board": 4,
            "codes_key_env": KEY_ENV,
            "poll_interval_s": 0.2,
            "unlock_window_s": 5,
            **locker_options,
        },
    }
    path = edge_config(edge_dir, broker.port, [device], store=STORE, node=NODE)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=15)
    rig = Rig(broker, cloud, path, http)
    try:
        # the birth's compartments reach the cloud's mirror
        await rig.eventually(
            lambda: rig.call("GET", f"/api/v1/stores/{STORE}/lockers"),
            lambda rows: len(rows) == 4,
            "compartments mirrored from the birth",
        )
        yield rig
    finally:
        await http.aclose()
        await rig.stop_edge()
        await cloud.stop()
