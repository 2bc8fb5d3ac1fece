"""The demo's shoppers with the app: each simulated phone that runs the app (sim-ble's app
phones) behaves as the app would on a real phone:

- opts in (`PUT /api/v1/shoppers/{id}` with consent), once per shopper;
- asks for its broker login (`POST /api/v1/shoppers/{id}/broker-login`) and listens on its
  own topics (offers, order updates) with it; on a broker without logins (the demo's
  embedded broker answers the cloud's 503) it listens anonymously on the same topics;
- registers each rotating token it will advertise before it advertises it
  (`POST /api/v1/shoppers/{id}/tokens`): the current one and the next.

The shopper id is `<store>-<phone name>`: when sim-ble sends new shoppers into an empty
store, the names repeat, as regulars come back.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud.broker.policy import shopper_inbox, shopper_topics
from simulators.ble.driver import SimBleDriver
from simulators.scenario.store import SimulatedStore

log = logging.getLogger(__name__)

TOKEN_MARGIN_S = 60.0  # registered validity beyond the phone's own epoch, both sides


@dataclass
class AppStats:
    shoppers: int = 0
    tokens: int = 0
    offers: int = 0  # offer messages the apps received
    order_updates: int = 0
    anonymous: int = 0  # apps without a broker login (the broker has none)
    refused: int = 0  # API calls the cloud refused (logged)


@dataclass
class App:
    shopper_id: str
    inbox: str
    client: paho.Client
    tokens: set[str] = field(default_factory=set)


class ShopperApps:
    def __init__(
        self,
        api: httpx.AsyncClient,
        app_key: str,
        stores: list[SimulatedStore],
        *,
        mqtt_host: str,
        mqtt_port: int,
    ) -> None:
        self.api = api
        self.app_key = app_key
        self.stores = stores
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.apps: dict[str, App] = {}
        self.stats = AppStats()
        self.offers: list[dict[str, Any]] = []  # newest last, bounded
        self._lock = threading.Lock()

    def inboxes(self, store: str) -> list[str]:
        return [a.inbox for sid, a in self.apps.items() if sid.startswith(f"{store}-")]

    async def sync(self) -> None:
        """Opt in every app phone not yet known; register tokens ahead of their use."""
        for store in self.stores:
            driver = store.drivers.get("beacons")
            if not isinstance(driver, SimBleDriver):
                continue
            sim = driver.sim
            for phone in list(sim.phones):
                if not phone.app:
                    continue
                shopper_id = f"{store.id}-{phone.name}"
                app = self.apps.get(shopper_id) or await self._opt_in(shopper_id)
                if app is None:
                    continue
                # the current identity and the next one: registered ahead, as an app does
                phone.identity(max(sim.now, phone.walk.start))
                phone.identity(max(sim.now, phone.walk.start) + phone.rotate_s)
                for valid_from, _, token in phone.identities:
                    if token not in app.tokens:
                        await self._register(app, token, valid_from, phone.rotate_s)

    async def _opt_in(self, shopper_id: str) -> App | None:
        response = await self.api.put(
            f"/api/v1/shoppers/{shopper_id}", headers=self._headers(), json={"consent": True}
        )
        if response.status_code not in (200, 201):
            self.stats.refused += 1
            log.warning("demo shopper %s not opted in: %s", shopper_id, response.text[:200])
            return None
        login = await self.api.post(
            f"/api/v1/shoppers/{shopper_id}/broker-login", headers=self._headers()
        )
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=login.json()["client_id"]
            if login.status_code == 201
            else f"demo-app-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
        )
        if login.status_code == 201:
            client.username_pw_set(login.json()["username"], login.json()["password"])
        else:
            self.stats.anonymous += 1
        topics = shopper_topics(shopper_id)
        client.on_connect = lambda c, *_: c.subscribe([(topics.offers, 1), (topics.orders, 1)])
        client.on_message = self._on_message
        client.connect_async(self.mqtt_host, self.mqtt_port)
        client.loop_start()
        app = self.apps[shopper_id] = App(shopper_id, shopper_inbox(shopper_id), client)
        self.stats.shoppers += 1
        return app

    async def _register(self, app: App, token: str, valid_from: float, rotate_s: float) -> None:
        start = datetime.fromtimestamp(valid_from - TOKEN_MARGIN_S, UTC)
        end = start + timedelta(seconds=min(rotate_s + 2 * TOKEN_MARGIN_S, 24 * 3600))
        response = await self.api.post(
            f"/api/v1/shoppers/{app.shopper_id}/tokens",
            headers=self._headers(),
            json={"token": token, "valid_from": start.isoformat(), "expires_at": end.isoformat()},
        )
        app.tokens.add(token)  # a refused token is not retried: the reason is logged
        if response.status_code == 201:
            self.stats.tokens += 1
        else:
            self.stats.refused += 1
            log.info("demo token of %s refused: %s", app.shopper_id, response.text[:200])

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        """In paho's thread: count, keep the newest offers."""
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            if message.topic.endswith("/offers"):
                self.stats.offers += 1
                self.offers.append(payload)
                del self.offers[:-50]
            else:
                self.stats.order_updates += 1

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.app_key}

    def close(self) -> None:
        for app in self.apps.values():
            app.client.disconnect()
            app.client.loop_stop()
