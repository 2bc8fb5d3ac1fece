"""End to end: the cloud runtime on a real Mosquitto, the shopper's app subscribed to its
topic, a real HTTP server as the webhook, the app's API calls closing the funnel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.broker.policy import shopper_inbox
from cloud.config import CloudSettings, hash_key
from cloud.offers.delivery import signature
from cloud.runtime import CloudRuntime
from protocols.codec import decode_as, encode, topic_for
from protocols.ids import contains_mac_address
from protocols.messages import Offer, utc_now
from protocols.topics import offers_topic
from tests.cloud.streams import rfid
from tests.mqtt_helpers import Collector, publisher
from tests.offers.helpers import (
    GTIN,
    NODE,
    SHELF,
    STORE,
    TOKEN,
    WebhookServer,
    presence,
    reset_seqs,
)
from tests.servers import MosquittoBroker

OPS, APP = "ops-key", "app-key"
INBOX = shopper_inbox("shopper-1")
SECRET = "webhook-secret"


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.close()


async def _wait(condition: Any, within: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} within {within}s")


async def test_offer_reaches_the_shoppers_topic_and_the_webhook(
    mosquitto_broker: MosquittoBroker, webhook: WebhookServer, tmp_path: Path
) -> None:
    reset_seqs()
    settings = CloudSettings.model_validate(
        {
            "mqtt": {"host": "127.0.0.1", "port": mosquitto_broker.port},
            "ingest": {"client_id": "cloud-offers-test", "spool_dir": str(tmp_path / "spool")},
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
            "api": {
                "port": 0,
                "keys": [
                    {"name": "ops", "role": "ops", "sha256": hash_key(OPS)},
                    {"name": "app", "role": "shopper_app", "sha256": hash_key(APP)},
                ],
            },
            "stores": [{"id": STORE, "nodes": [NODE]}],
            "domains": {
                "offers": {"webhook": {"url": webhook.url, "secret": SECRET, "backoff_min_s": 0.2}}
            },
        }
    )
    runtime = CloudRuntime(settings)
    await runtime.start()
    assert await asyncio.to_thread(runtime.consumer.connected.wait, 20), "cloud not connected"
    app = Collector("127.0.0.1", mosquitto_broker.port, [offers_topic(INBOX)])
    wire = Collector("127.0.0.1", mosquitto_broker.port, ["storegate/#"])
    edge = publisher("127.0.0.1", mosquitto_broker.port)
    base = f"http://127.0.0.1:{runtime.api_port}/api/v1"
    ops, shopper_app = {"x-api-key": OPS}, {"x-api-key": APP}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            r = await api.put("/shoppers/shopper-1", json={"consent": True}, headers=shopper_app)
            assert r.status_code == 200, r.text
            now = utc_now()
            r = await api.post(
                "/shoppers/shopper-1/tokens",
                json={
                    "token": TOKEN,
                    "valid_from": (now - timedelta(minutes=1)).isoformat(),
                    "expires_at": (now + timedelta(minutes=15)).isoformat(),
                },
                headers=shopper_app,
            )
            assert r.status_code == 201, r.text
            spec = {
                "title": "2 for 1 on coffee",
                "trigger": "enter",
                "zones": ["coffee"],
                "gtins": [GTIN],
            }
            r = await api.put("/campaigns/coffee-2for1", json=spec, headers=shopper_app)
            assert r.status_code == 403  # the app may not run campaigns
            r = await api.put("/campaigns/coffee-2for1", json=spec, headers=ops)
            assert r.status_code == 200, r.text
            r = await api.put("/campaigns/bad", json={**spec, "zones": []}, headers=ops)
            assert r.status_code == 422

            for outgoing in (
                rfid(1, {(SHELF, GTIN): 3}),
                presence(("enter", TOKEN, "coffee", -61.0, utc_now())),
            ):
                edge.publish(topic_for(outgoing), encode(outgoing), qos=1).wait_for_publish(10)

            (received,) = await asyncio.to_thread(app.take, 1, 30.0)
            offer = decode_as(Offer, received.payload, topic=received.topic)
            assert (offer.campaign, offer.zone, offer.shopper) == ("coffee-2for1", "coffee", INBOX)

            # the webhook: refused once (503), retried, then accepted; signed
            await _wait(lambda: _async(len(webhook.requests) >= 2), 30, "webhook retried")
            headers, body = webhook.requests[-1]
            assert headers["x-storegate-signature"] == signature(SECRET, body)
            assert json.loads(body)["offer"]["offer_id"] == offer.offer_id
            assert webhook.requests[0][1] == body

            async def counts() -> dict[str, Any]:
                r = await api.get("/campaigns/coffee-2for1/counts", headers=ops)
                assert r.status_code == 200, r.text
                data: dict[str, Any] = r.json()
                return data

            await _wait(
                lambda: _check(counts(), lambda c: c["delivered"] == 1), 20, "offer delivered"
            )
            r = await api.post(f"/offers/{offer.offer_id}/opened", headers=shopper_app)
            assert r.json() == {"offer_id": offer.offer_id, "status": "opened", "changed": True}
            r = await api.post(f"/offers/{offer.offer_id}/redeemed", headers=shopper_app)
            assert r.json()["status"] == "redeemed"
            r = await api.post(f"/offers/{offer.offer_id}/opened", headers=shopper_app)
            assert r.json() == {"offer_id": offer.offer_id, "status": "redeemed", "changed": False}
            r = await api.post("/offers/doesnotexist/opened", headers=shopper_app)
            assert r.status_code == 404
            metrics = (await api.get(f"http://127.0.0.1:{runtime.api_port}/metrics")).text
            assert 'storegate_offer_decisions_total{reason="",status="triggered"} 1.0' in metrics
            assert 'storegate_offer_webhooks_total{outcome="done"} 1.0' in metrics
            final = await counts()
            assert {k: final[k] for k in ("triggered", "delivered", "opened", "redeemed")} == {
                "triggered": 1,
                "delivered": 1,
                "opened": 1,
                "redeemed": 1,
            }
    finally:
        edge.disconnect()
        edge.loop_stop()
        app.close()
        await runtime.stop()
    # nothing that crossed the broker carried a MAC address
    seen: list[str] = []
    while not wire.messages.empty():
        received_wire = wire.messages.get_nowait()
        seen.append(received_wire.topic)
        text = received_wire.payload.decode("utf-8", "replace")
        assert not contains_mac_address(received_wire.topic + text)
    wire.close()
    assert offers_topic(INBOX) in seen
    # the token the phone broadcasts never names its topic
    assert not any(TOKEN in topic for topic in seen if "/shopper/" in topic)


async def _async(value: bool) -> bool:
    return value


async def _check(pending: Any, predicate: Any) -> bool:
    return bool(predicate(await pending))
