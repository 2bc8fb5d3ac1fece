"""A shopper app's own broker login, end to end on the shipped broker config: the cloud
(ingestor, offer listener and admin each on their own pinned login) gives an opted-in app a
login through the API, the app reads its offers with it and nothing else, and withdrawal or
erasure takes the login away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.broker import policy
from cloud.broker.dynsec_file import NodeLogin, load_logins
from cloud.config import CloudSettings, hash_key
from cloud.runtime import CloudRuntime
from protocols.codec import decode_as, encode, topic_for
from protocols.messages import Offer, utc_now
from tests.cloud.streams import rfid
from tests.offers.helpers import GTIN, NODE, SHELF, STORE, TOKEN, presence, reset_seqs
from tests.servers import MosquittoBroker
from tests.shipped_broker import (
    ADMIN,
    INGEST,
    LOGINS,
    PASSWORDS,
    Client,
    ConnectionRefusedByBrokerError,
    start_shipped_mosquitto,
    wait_for,
)

OPS, APP = "ops-key", "app-key"
EDGE_PASSWORD = "edge-password-0123456789"
EDGE_LOGIN = f"storegate-edge-{STORE}-{NODE}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    logins = load_logins(LOGINS)
    logins.nodes.append(NodeLogin(store=STORE, node=NODE, password_env="EDGE_PASSWORD"))
    started = start_shipped_mosquitto(
        tmp_path, {**PASSWORDS, "EDGE_PASSWORD": EDGE_PASSWORD}, logins
    )
    yield started
    started.kill()


def _settings(broker: MosquittoBroker, tmp_path: Path) -> CloudSettings:
    return CloudSettings.model_validate(
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
                    {"name": "ops", "role": "ops", "sha256": hash_key(OPS)},
                    {"name": "app", "role": "shopper_app", "sha256": hash_key(APP)},
                ],
            },
            "stores": [{"id": STORE, "nodes": [NODE]}],
        }
    )


async def test_an_opted_in_app_gets_a_login_for_its_own_offers_only(
    broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reset_seqs()
    runtime = CloudRuntime(_settings(broker, tmp_path))
    await runtime.start()
    assert await asyncio.to_thread(runtime.consumer.connected.wait, 20), "cloud not connected"
    app = {"x-api-key": APP}
    edge = Client(broker, EDGE_LOGIN, EDGE_PASSWORD)
    shopper: Client | None = None
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{runtime.api_port}/api/v1", timeout=20
        ) as api:
            r = await api.post("/shoppers/shopper-1/broker-login", headers=app)
            assert r.status_code == 404, r.text  # no such shopper
            r = await api.put("/shoppers/shopper-1", json={"consent": False}, headers=app)
            r = await api.post("/shoppers/shopper-1/broker-login", headers=app)
            assert r.status_code == 409, r.text  # not opted in
            r = await api.put("/shoppers/shopper-1", json={"consent": True}, headers=app)
            r = await api.post("/shoppers/shopper-1/broker-login", headers={"x-api-key": OPS})
            assert r.status_code == 201, r.text
            r = await api.post("/shoppers/shopper-1/broker-login", headers=app)
            assert r.status_code == 201, r.text
            login: dict[str, Any] = r.json()
            inbox = policy.shopper_inbox("shopper-1")
            assert login["client_id"] == login["username"] == policy.shopper_login("shopper-1")
            assert login["topics"] == {
                "offers": f"storegate/v1/shopper/{inbox}/offers",
                "orders": f"storegate/v1/shopper/{inbox}/orders",
            }
            # nothing of the login is what the phone broadcasts, nor the shopper id
            for value in (login["username"], login["password"], *login["topics"].values()):
                assert TOKEN not in value
                assert "shopper-1" not in value
            assert len(login["password"]) >= 32
            # and the app cannot make the phone broadcast its inbox as a token
            r = await api.post(
                "/shoppers/shopper-1/tokens",
                json={"token": inbox, "expires_at": (utc_now() + timedelta(hours=1)).isoformat()},
                headers=app,
            )
            assert r.status_code == 422, r.text
            r = await api.post(
                "/shoppers/shopper-1/tokens",
                json={
                    "token": TOKEN,
                    "valid_from": (utc_now() - timedelta(minutes=1)).isoformat(),
                    "expires_at": (utc_now() + timedelta(minutes=15)).isoformat(),
                },
                headers=app,
            )
            assert r.status_code == 201, r.text
            spec = {"title": "2 for 1", "trigger": "enter", "zones": ["coffee"], "gtins": [GTIN]}
            r = await api.put("/campaigns/coffee", json=spec, headers={"x-api-key": OPS})
            assert r.status_code == 200, r.text

            shopper = app_client = Client(
                broker, login["username"], login["password"], client_id=login["client_id"]
            )
            assert not shopper.subscribe(login["topics"]["offers"]).is_failure
            assert not shopper.subscribe(login["topics"]["orders"]).is_failure
            other = policy.shopper_topics("shopper-2").offers
            assert shopper.subscribe(other).getName() == "Not authorized"
            assert shopper.publish(login["topics"]["offers"], b"{}").is_failure

            for outgoing in (
                rfid(1, {(SHELF, GTIN): 3}),
                presence(("enter", TOKEN, "coffee", -61.0, utc_now())),
            ):
                assert not edge.publish(str(topic_for(outgoing)), encode(outgoing)).is_failure
            assert await asyncio.to_thread(wait_for, lambda: bool(app_client.messages()), 30.0)
            topic, payload = shopper.messages()[0]
            offer = decode_as(Offer, payload, topic=topic)
            assert (topic, offer.shopper, offer.campaign) == (
                login["topics"]["offers"],
                inbox,
                "coffee",
            )

            async def delivered() -> bool:
                r = await api.get("/campaigns/coffee/counts", headers={"x-api-key": OPS})
                return bool(r.json()["delivered"] == 1)

            # the offer listener ran on its own login (storegate-cloud-ingest-offers)
            for _ in range(100):
                if await delivered():
                    break
                await asyncio.sleep(0.1)
            assert await delivered()

            # provisioning again replaces the password; withdrawal takes the login away
            shopper.close()
            shopper = None
            r = await api.post("/shoppers/shopper-1/broker-login", headers=app)
            assert r.status_code == 201, r.text
            renewed = r.json()
            with pytest.raises(ConnectionRefusedByBrokerError):
                Client(broker, login["username"], login["password"], client_id=login["client_id"])
            Client(
                broker, renewed["username"], renewed["password"], client_id=renewed["client_id"]
            ).close()
            r = await api.put("/shoppers/shopper-1", json={"consent": False}, headers=app)
            assert r.status_code == 200, r.text
            with pytest.raises(ConnectionRefusedByBrokerError):
                Client(
                    broker, renewed["username"], renewed["password"], client_id=renewed["client_id"]
                )
            # erasure too (after opting in and provisioning again)
            await api.put("/shoppers/shopper-1", json={"consent": True}, headers=app)
            third = (await api.post("/shoppers/shopper-1/broker-login", headers=app)).json()
            assert (await api.delete("/shoppers/shopper-1", headers=app)).status_code == 204
            with pytest.raises(ConnectionRefusedByBrokerError):
                Client(broker, third["username"], third["password"], client_id=third["client_id"])
    finally:
        if shopper is not None:
            shopper.close()
        edge.close()
        await runtime.stop()
    # the passwords were never logged, by the cloud or the broker
    logged = caplog.text + broker.log_path.read_text()
    for password in (login["password"], renewed["password"], third["password"]):
        assert password not in logged


async def test_without_an_admin_login_the_endpoint_says_so(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    settings = _settings(broker, tmp_path).model_copy(update={"broker_admin": None})
    runtime = CloudRuntime(settings)
    await runtime.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{runtime.api_port}/api/v1", timeout=20
        ) as api:
            app = {"x-api-key": APP}
            await api.put("/shoppers/shopper-1", json={"consent": True}, headers=app)
            r = await api.post("/shoppers/shopper-1/broker-login", headers=app)
            assert r.status_code == 503, r.text
            assert "broker_admin" in r.text
    finally:
        await runtime.stop()
