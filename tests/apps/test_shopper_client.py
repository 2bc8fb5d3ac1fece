"""examples/shopper_client.py, the reference client for app developers, against the
shipped broker config (dynamic security, one login per session): it receives the shopper's
offer and order update with the login the cloud provisions, and a revoked login is refused."""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import aiomqtt
import httpx
import pytest

from cloud.broker.dynsec_file import NodeLogin, load_logins
from cloud.config import CloudSettings, hash_key
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from protocols.messages import utc_now
from tests.conftest import REPO_ROOT
from tests.offers.helpers import NODE, STORE, TOKEN, presence, reset_seqs
from tests.servers import MosquittoBroker
from tests.shipped_broker import ADMIN, INGEST, LOGINS, PASSWORDS, Client, start_shipped_mosquitto

APP_KEY, OPS_KEY = "app-key", "ops-key"
EDGE_PASSWORD = "edge-password-0123456789"
KEY_ENV = "STOREGATE_TEST_SHOPPER_CLIENT_LOCKER_KEY"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "shopper_client", REPO_ROOT / "examples" / "shopper_client.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    logins = load_logins(LOGINS)
    logins.nodes.append(NodeLogin(store=STORE, node=NODE, password_env="EDGE_PASSWORD"))
    started = start_shipped_mosquitto(
        tmp_path, {**PASSWORDS, "EDGE_PASSWORD": EDGE_PASSWORD}, logins
    )
    yield started
    started.kill()


async def test_the_example_receives_its_offers_and_order_updates(
    broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_seqs()
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    settings = CloudSettings.model_validate(
        {
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "username": INGEST,
                "password": PASSWORDS["MQTT_CLOUD_PASSWORD"],
            },
            "ingest": {"client_id": INGEST, "spool_dir": str(tmp_path / "spool")},
            "broker_admin": {"username": ADMIN, "password": PASSWORDS["MQTT_ADMIN_PASSWORD"]},
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
            "api": {
                "port": 0,
                "keys": [
                    {"name": "ops", "role": "ops", "sha256": hash_key(OPS_KEY)},
                    {"name": "app", "role": "shopper_app", "sha256": hash_key(APP_KEY)},
                ],
            },
            "stores": [{"id": STORE, "nodes": [NODE]}],
            "domains": {
                "lockers": {
                    "banks": [
                        {"store": STORE, "node": NODE, "bank": "bank-1", "codes_key_env": KEY_ENV}
                    ],
                    "reserve_stock": False,
                }
            },
        }
    )
    example = load_example()
    runtime = CloudRuntime(settings)
    await runtime.start()
    assert await asyncio.to_thread(runtime.consumer.connected.wait, 20), "cloud not connected"
    edge = Client(broker, f"storegate-edge-{STORE}-{NODE}", EDGE_PASSWORD)
    api = f"http://127.0.0.1:{runtime.api_port}"
    app = {"Authorization": f"Bearer {APP_KEY}"}
    receiver: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            await http.put("/api/v1/shoppers/shopper-1", json={"consent": True}, headers=app)
            now = utc_now()
            token = {
                "token": TOKEN,
                "valid_from": (now - timedelta(minutes=1)).isoformat(),
                "expires_at": (now + timedelta(minutes=15)).isoformat(),
            }
            await http.post("/api/v1/shoppers/shopper-1/tokens", json=token, headers=app)
            spec = {"title": "Welcome", "trigger": "enter", "zones": ["entrance"]}
            campaign = await http.put(
                "/api/v1/campaigns/welcome", json=spec, headers={"x-api-key": OPS_KEY}
            )
            assert campaign.status_code == 200, campaign.text

            login = await example.provision(api, APP_KEY, "shopper-1")
            received: asyncio.Queue[object] = asyncio.Queue()
            subscribed = asyncio.Event()

            async def collect(message: object) -> None:
                await received.put(message)

            receiver = asyncio.create_task(
                example.receive(login, broker.host, broker.port, collect, subscribed=subscribed)
            )
            async with asyncio.timeout(20):
                await subscribed.wait()
                enter = presence(("enter", TOKEN, "entrance", -60.0, utc_now()))
                assert not edge.publish(str(topic_for(enter)), encode(enter)).is_failure
                offer = await received.get()
                assert (offer.kind, offer.body["title"]) == ("offer", "Welcome")  # type: ignore[attr-defined]
                order = await http.post(
                    f"/api/v1/stores/{STORE}/orders",
                    json={"items": [{"gtin": "09506000134352"}], "shopper": login.inbox},
                    headers=app,
                )
                assert order.status_code == 201, order.text
                # the shopper hears of the moves that matter to it (ready, collected,
                # expired, cancelled)
                cancelled = await http.post(
                    f"/api/v1/orders/{order.json()['order_id']}/state",
                    json={"state": "cancelled", "reason": "out of stock"},
                    headers={"x-api-key": OPS_KEY},
                )
                assert cancelled.status_code == 200, cancelled.text
                update = await received.get()
            assert update.kind == "order"  # type: ignore[attr-defined]
            assert update.body["order_id"] == order.json()["order_id"]  # type: ignore[attr-defined]
            assert update.body["state"] == "cancelled"  # type: ignore[attr-defined]

            # withdrawal revokes the login: the client is refused, it does not retry forever
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            receiver = None
            await http.put("/api/v1/shoppers/shopper-1", json={"consent": False}, headers=app)
            with pytest.raises(aiomqtt.MqttCodeError):
                async with asyncio.timeout(10):
                    await example.receive(login, broker.host, broker.port, collect)
    finally:
        if receiver is not None:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        edge.close()
        await runtime.stop()
