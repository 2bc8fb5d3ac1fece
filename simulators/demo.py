"""`storegate demo`: the whole system on one machine, in one command.

    embedded MQTT broker (iotcore, its own child process)
      <- three simulated stores: the real edge daemon each, with sim-llrp + sim-cu16 +
         sim-ble and the default scenario's shoppers and staff
      -> the cloud (CloudRuntime in this process): ingest, SQLite in a temp dir, history in
         its SQL table, API + dashboard on http://127.0.0.1:8000

Once the stores are online every flow runs, through the cloud's API as its users would:
planograms, reorder points and a campaign per store (simulators/demo_setup.py); the app
shoppers opt in, register their tokens and listen for offers (simulators/demo_shoppers.py);
online orders are placed through the order intake, picked with their EPCs scanned, staged,
collected from a locker, the counter or curbside, cancelled or left to expire
(simulators/demo_orders.py).

Ctrl-C or SIGTERM stops it in order: the stores send their death and leave, the cloud acks
its last batch, the broker stops. Exit code 0 when everything stopped cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from simulators.demo_orders import DemoOrders
from simulators.demo_setup import SetupError, configure_store
from simulators.demo_shoppers import ShopperApps
from simulators.scenario.fleet import Fleet
from simulators.scenario.model import Behaviour, BrokerSection, Scenario, Span, default_scenario
from simulators.scenario.store import SimulatedStore

if TYPE_CHECKING:
    import httpx
    from iotcore import Broker

    from cloud.runtime import CloudRuntime

DEFAULT_HTTP_PORT = 8000
# The demo keys of examples/cloud.yaml: printed on purpose, they only open this local demo.
DEMO_KEYS = {"ops": "ops-demo-key", "staff": "staff-demo-key", "shopper_app": "shopper-demo-key"}
# The staff key sees one store, as a store manager's would.
DEMO_STAFF_STORES = ["store-042"]
DEMO_CATALOGUE = Path(__file__).with_name("demo-catalogue.csv")
STORE_ONLINE_TIMEOUT_S = 30.0
DEFAULT_HOLD_S = 60.0
# Busier than the scenario's default store, so that every flow shows within a minute: more
# shoppers, shorter browsing, more misplaced items. Online orders are the cloud's own
# (simulators/demo_orders.py), so the simulator does not play the order system here.
DEMO_BEHAVIOUR = Behaviour(
    shoppers_per_minute=12,
    browse_s=Span(low=3, high=15),
    misplace_p=0.4,
    orders_per_hour=0,
)
ORDER_EVERY_S = 20.0  # per store, on average
LOCKER_BANK = "lockers"  # the locker device id of every simulated store
KEY_ENV = "STOREGATE_DEMO_LOCKER_KEY_{}"


class StopRequestedError(Exception):
    """Ctrl-C or SIGTERM arrived while starting: unwind what is already running."""


@dataclass(slots=True)
class StoreRow:
    status: str = "unknown"
    items: int = 0
    rate: float = 0.0


def run_demo(
    *,
    port: int,
    duration: float | None,
    console: Console,
    http_port: int | None = None,
    data_dir: Path | None = None,
    hold_s: float = DEFAULT_HOLD_S,
) -> int:
    demo = Demo(port=port, http_port=http_port, duration=duration, console=console, hold_s=hold_s)
    return asyncio.run(demo.run(data_dir))


class Demo:
    def __init__(
        self,
        *,
        port: int,
        http_port: int | None,
        duration: float | None,
        console: Console,
        hold_s: float = DEFAULT_HOLD_S,
    ) -> None:
        self.port = port
        self.http_port = http_port
        self.duration = duration
        self.console = console
        self.hold_s = hold_s
        self.stop = asyncio.Event()
        self.broker: Broker | None = None
        self.cloud: CloudRuntime | None = None
        self.fleet: Fleet | None = None
        self.api: httpx.AsyncClient | None = None
        self.apps: ShopperApps | None = None
        self.orders: list[DemoOrders] = []
        self._flows: list[asyncio.Task[None]] = []

    async def run(self, data_dir: Path | None) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        keep = data_dir is not None
        work = data_dir or Path(tempfile.mkdtemp(prefix="storegate-demo-"))
        work.mkdir(parents=True, exist_ok=True)
        code = 0
        try:
            await self._start(work)
            await self._show()
        except StopRequestedError:
            pass
        except StartError as exc:
            self.console.print(f"[red]✗ {exc}[/]")
            code = 1
        finally:
            if not await self._shutdown():
                code = 1
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
        if code == 0:
            self.console.print("[green]✓[/] demo stopped cleanly")
        return code

    # ------------------------------------------------------------------ start

    async def _start(self, work: Path) -> None:
        scenario = default_scenario().model_copy(
            update={
                "broker": BrokerSection(port=self.port, protocol="3.1.1"),
                "behaviour": DEMO_BEHAVIOUR,
            }
        )
        # Built before the cloud: the cloud needs each simulated bank's pickup-code key.
        fleet = self.fleet = Fleet(scenario, state_dir=work)
        self._export_locker_keys(fleet)
        with Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            # Broker and cloud start to the end even when Ctrl-C comes meanwhile (a few
            # seconds): stopping a half-started part is where leaks hide.
            step = progress.add_task(f"MQTT broker on 127.0.0.1:{self.port}")
            await self._start_broker()
            progress.update(step, completed=1, total=1)
            self._check_stop()

            http_port = self._pick_http_port()
            step = progress.add_task(f"cloud (ingest, SQLite, API on port {http_port or 'any'})")
            await self._start_cloud(scenario, work, http_port)
            progress.update(step, completed=1, total=1)
            self._check_stop()

            steps: dict[str, TaskID] = {}

            def started(store: SimulatedStore) -> None:
                steps[store.id] = progress.add_task(
                    f"store {store.id} ({store.section.name}): edge daemon with"
                    f" {len(store.settings.devices)} simulated devices"
                )

            await fleet.start(started)
            await self._until_stopped(self._stores_online(progress, steps))
            step = progress.add_task(
                "every flow: planograms, reorder points, campaigns, app shoppers, online orders"
            )
            await self._until_stopped(self._start_flows())
            progress.update(step, completed=1, total=1)

    def _export_locker_keys(self, fleet: Fleet) -> None:
        """Each simulated bank's key, for the cloud to derive the same pickup codes: in this
        process's environment only, as a deployment's secret store would hand it over."""
        for store in fleet.stores:
            if store.lockers is not None:
                os.environ[_key_env(store.id)] = store.lockers.driver.key.hex()

    async def _start_flows(self) -> None:
        import httpx

        assert self.cloud is not None
        assert self.fleet is not None
        api = self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.cloud.api_port}", timeout=10
        )
        for store in self.fleet.stores:
            await self._configure(api, store.id)
        apps = self.apps = ShopperApps(
            api,
            DEMO_KEYS["shopper_app"],
            self.fleet.stores,
            mqtt_host="127.0.0.1",
            mqtt_port=self.port,
        )
        await apps.sync()
        self._flows.append(asyncio.create_task(self._keep_apps_in_sync(apps), name="demo-apps"))
        for index, store in enumerate(self.fleet.stores):
            if store.lockers is None:
                continue
            orders = DemoOrders(
                api,
                staff_key=DEMO_KEYS["ops"],
                webshop_key=DEMO_KEYS["shopper_app"],
                store=store,
                shoppers=apps.inboxes(store.id),
                rng=random.Random(index),
                every_s=ORDER_EVERY_S,
                pickup_after_s=(3.0, min(12.0, self.hold_s / 2)),
                turn=index,
            )
            self.orders.append(orders)
            self._flows.append(
                asyncio.create_task(orders.run(first_after_s=1.0 + index), name="demo-orders")
            )

    async def _configure(self, api: httpx.AsyncClient, store: str) -> None:
        """A store's first counts may take a report interval to arrive: retry briefly."""
        deadline = time.monotonic() + STORE_ONLINE_TIMEOUT_S
        while True:
            try:
                await configure_store(api, DEMO_KEYS["ops"], store)
                return
            except SetupError as exc:
                if time.monotonic() > deadline:
                    raise StartError(f"could not configure {store}: {exc}") from None
                await asyncio.sleep(0.5)

    async def _keep_apps_in_sync(self, apps: ShopperApps) -> None:
        """New phones enter the stores and tokens rotate: the apps keep up, every second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await apps.sync()
            except Exception as exc:  # the API hiccuped: say so, try again next second
                self.console.print(f"[yellow]shopper apps: {exc!r}[/]")

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequestedError

    async def _until_stopped(self, step: object) -> None:
        """Run a start-up step, or give up on it when Ctrl-C arrives."""
        assert asyncio.iscoroutine(step)
        work = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            raise StopRequestedError
        work.result()

    async def _start_broker(self) -> None:
        from iotcore import Broker  # the sim extra

        broker = Broker(port=self.port, listen="127.0.0.1", max_payload_size=1024 * 1024)
        try:
            await asyncio.to_thread(broker.start)
        except (OSError, RuntimeError) as exc:
            raise StartError(
                f"cannot start the MQTT broker on port {self.port}: {exc} (try --port)"
            ) from None
        self.broker = broker

    def _pick_http_port(self) -> int:
        if self.http_port is not None:
            return self.http_port
        if _port_free(DEFAULT_HTTP_PORT):
            return DEFAULT_HTTP_PORT
        self.console.print(
            f"[yellow]port {DEFAULT_HTTP_PORT} is taken[/]: the API gets a free port instead"
            " (or choose one with --http-port)"
        )
        return 0

    async def _start_cloud(self, scenario: Scenario, work: Path, http_port: int) -> None:
        from cloud.config import CloudSettings, hash_key
        from cloud.runtime import CloudRuntime

        settings = CloudSettings.model_validate(
            {
                "mqtt": {"host": "127.0.0.1", "port": self.port, "protocol": "3.1.1"},
                "ingest": {"client_id": "storegate-demo-cloud", "spool_dir": work / "spool"},
                "database_url": f"sqlite+aiosqlite:///{work / 'cloud.db'}",
                "api": {
                    "host": "127.0.0.1",
                    "port": http_port,
                    "keys": [
                        {
                            "name": f"{role}-demo",
                            "role": role,
                            "sha256": hash_key(key),
                            **({"stores": DEMO_STAFF_STORES} if role == "staff" else {}),
                        }
                        for role, key in DEMO_KEYS.items()
                    ],
                },
                "stores": [
                    {"id": s.id, "name": s.name, "nodes": [s.node]} for s in scenario.stores
                ],
                "domains": {
                    "lockers": {
                        "banks": [
                            {
                                "store": s.id,
                                "node": s.node,
                                "bank": LOCKER_BANK,
                                "codes_key_env": _key_env(s.id),
                            }
                            for s in scenario.stores
                            if s.lockers is not None
                        ],
                        # short holds, so that orders nobody collects expire while you watch
                        "hold_hours": self.hold_s / 3600,
                        "expiry_check_s": min(5.0, self.hold_s / 4),
                    },
                },
            }
        )
        try:
            cloud = CloudRuntime(settings)
        except Exception as exc:  # a broken domain or config: say what, stop the rest
            raise StartError(f"the cloud could not be set up: {exc!r}") from None
        try:
            await cloud.start()
        except (Exception, SystemExit) as exc:  # uvicorn exits when it cannot bind
            with contextlib.suppress(Exception):
                await cloud.stop()
            raise StartError(f"the cloud could not start: {exc!r} (try --http-port)") from None
        self.cloud = cloud
        await import_demo_catalogue(cloud)

    async def _stores_online(self, progress: Progress, steps: dict[str, TaskID]) -> None:
        deadline = time.monotonic() + STORE_ONLINE_TIMEOUT_S
        waiting = dict(steps)
        while waiting:
            rows = await self._rows()
            for store_id in [s for s in waiting if rows.get(s, StoreRow()).status == "online"]:
                progress.update(waiting.pop(store_id), completed=1, total=1)
            if time.monotonic() > deadline:
                raise StartError(f"store(s) {', '.join(waiting)} did not come online")
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ run

    async def _show(self) -> None:
        assert self.cloud is not None
        url = f"http://127.0.0.1:{self.cloud.api_port}"
        self.console.print(
            f"[bold]ops dashboard[/]: {url}/  (key [bold]{DEMO_KEYS['ops']}[/])\n"
            f"[bold]staff app[/]: {url}/staff  (key [bold]{DEMO_KEYS['staff']}[/], for"
            f" {', '.join(DEMO_STAFF_STORES)})\n"
            f"[bold]shopper app[/]: {url}/app  (key [bold]{DEMO_KEYS['shopper_app']}[/], the"
            " webshop's and the apps' key)\n"
            f"[bold]API[/]: curl -H 'X-API-Key: {DEMO_KEYS['ops']}' {url}/api/v1/stores\n"
            f"[bold]MQTT[/]: mqtt://127.0.0.1:{self.port} (MQTT 3.1.1).  Ctrl-C stops everything."
        )
        started = time.monotonic()
        previous = self._acked()
        rows = await self._rows()
        with Live(self._table(rows, 0.0, url), console=self.console, refresh_per_second=1) as live:
            while not self.stop.is_set():
                elapsed = time.monotonic() - started
                if self.duration is not None and elapsed >= self.duration:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.stop.wait()
                acked = self._acked()
                rows = await self._rows()
                for store_id, row in rows.items():
                    row.rate = acked.get(store_id, 0) - previous.get(store_id, 0)
                previous = acked
                live.update(self._table(rows, time.monotonic() - started, url))
        self.console.line()

    def _acked(self) -> dict[str, int]:
        if self.fleet is None:
            return {}
        return {s.id: s.stats().messages_sent for s in self.fleet.stores}

    async def _rows(self) -> dict[str, StoreRow]:
        """Per store, what the cloud knows: node status and items on shelves."""
        from cloud.state import schema

        assert self.cloud is not None
        rows: dict[str, StoreRow] = {}
        async with self.cloud.engine.connect() as connection:
            for store_id, status in await connection.execute(
                select(schema.nodes.c.store_id, schema.nodes.c.status)
            ):
                rows.setdefault(store_id, StoreRow()).status = status
            inventory = schema.inventory
            for store_id, items in await connection.execute(
                select(inventory.c.store_id, func.sum(inventory.c["count"])).group_by(
                    inventory.c.store_id
                )
            ):
                rows.setdefault(store_id, StoreRow()).items = int(items or 0)
        return rows

    def _table(self, rows: dict[str, StoreRow], elapsed: float, url: str) -> Group:
        table = Table(title=f"storegate demo: {elapsed:5.0f} s", title_justify="left")
        table.add_column("store")
        table.add_column("node")
        table.add_column("items on shelves (cloud)", justify="right")
        table.add_column("messages/s", justify="right")
        assert self.fleet is not None
        for store in self.fleet.stores:
            row = rows.get(store.id, StoreRow())
            colour = "green" if row.status == "online" else "yellow"
            table.add_row(
                f"{store.id} {store.section.name}",
                f"{store.node}: [{colour}]{row.status}[/]",
                str(row.items),
                f"{row.rate:.0f}",
            )
        return Group(
            table,
            self._flow_line(),
            f"open {url}/ with the key {DEMO_KEYS['ops']}; Ctrl-C stops",
        )

    def _flow_line(self) -> str:
        placed = sum(o.stats.placed for o in self.orders)
        collected = sum(o.stats.collected for o in self.orders)
        cancelled = sum(o.stats.cancelled for o in self.orders)
        waiting = sum(o.stats.left_to_expire for o in self.orders)
        scanned = sum(o.stats.staged_with_epcs for o in self.orders)
        unscanned = sum(o.stats.staged_without_epcs for o in self.orders)
        apps = self.apps.stats if self.apps is not None else None
        return (
            f"orders: {placed} placed, {collected} collected, {cancelled} cancelled,"
            f" {waiting} left to expire, staged with EPCs {scanned} (without {unscanned});"
            f" app shoppers: {apps.shoppers if apps else 0},"
            f" offers received: {apps.offers if apps else 0}"
        )

    # ------------------------------------------------------------------ stop

    async def _shutdown(self) -> bool:
        """Stores first (death message while the broker is up), then cloud, then broker.
        Every part is stopped even if an earlier one fails; False if any failed."""
        clean = True
        with self.console.status("stopping: stores, cloud, broker"):
            for task in self._flows:
                task.cancel()
            await asyncio.gather(*self._flows, return_exceptions=True)
            if self.apps is not None:
                await asyncio.to_thread(self.apps.close)
            if self.api is not None:
                await self.api.aclose()
            for name, part in (("stores", self.fleet), ("cloud", self.cloud)):
                if part is None:
                    continue
                try:
                    await part.stop()
                except Exception as exc:  # report it, and still stop the rest
                    self.console.print(f"[red]✗ stopping the {name} failed: {exc!r}[/]")
                    clean = False
            if self.broker is not None:
                await asyncio.to_thread(self.broker.stop)
        return clean


class StartError(Exception):
    """A part of the demo could not start; the message says which and why."""


async def import_demo_catalogue(cloud: CloudRuntime) -> int:
    """Names, sizes and prices of the simulated stores' GTINs (`demo-catalogue.csv`)."""
    from cloud.catalogue import products
    from cloud.catalogue.csvimport import parse_catalogue
    from protocols.messages import utc_now

    parsed = parse_catalogue(DEMO_CATALOGUE.read_text(encoding="utf-8"), max_rows=10_000)
    async with cloud.engine.begin() as connection:
        created, updated = await products.upsert(connection, parsed.products, utc_now())
    return created + updated


def _key_env(store: str) -> str:
    return KEY_ENV.format(store.upper().replace("-", "_"))


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
