"""Inventory-level webhooks to a real HTTP server: RFID counts and reservations reach the
online channel signed, coalesced, retried, and only what the receiver has not seen."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from cloud.inventory.config import LevelWebhookOptions
from cloud.inventory.webhooks import LevelWebhookSender
from tests.inventory.shop import GTIN, OTHER_GTIN, SAFETY, STORE, Shop
from tests.lockers_e2e.webhook_server import Received, WebhookServer

SECRET = b"level-webhook-test-secret-0123456789"
TIMEOUT_S = 15.0


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookServer]:
    server = WebhookServer()
    await server.start()
    yield server
    await server.close()


@asynccontextmanager
async def sending(
    shop: Shop, receiver: WebhookServer, **options: Any
) -> AsyncIterator[LevelWebhookSender]:
    settings = LevelWebhookOptions.model_validate(
        {
            "url": receiver.url,
            "secret_env": "UNUSED_HERE",
            "debounce_s": 0.2,
            "backoff_base_s": 0.1,
            **options,
        }
    )
    sender = LevelWebhookSender(settings, lambda _store: SAFETY, SECRET)
    sender.start(shop.harness.engine, shop.bus)
    try:
        yield sender
    finally:
        await sender.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def delivered(receiver: WebhookServer) -> list[dict[str, Any]]:
    """Every level of every 2xx POST, in order."""
    return [level for r in receiver.received if r.status < 300 for level in r.body["levels"]]


def newest(receiver: WebhookServer) -> dict[tuple[str, str], dict[str, Any]]:
    return {(level["store"], level["gtin"]): level for level in delivered(receiver)}


def verify(post: Received) -> None:
    expected = "sha256=" + hmac.new(SECRET, post.raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers["x-storegate-signature"], expected)
    assert post.body["event"] == post.headers["x-storegate-event"] == "inventory_levels.update"
    assert post.body["delivery"] == post.delivery
    assert post.body["sent_at"].endswith("Z")


async def test_a_count_change_reaches_the_channel_signed_with_the_models_figures(
    shop: Shop, receiver: WebhookServer
) -> None:
    async with sending(shop, receiver):
        await until(lambda: True, "start")
        await shop.shelves(GTIN=7 + SAFETY)
        await until(lambda: (STORE, GTIN) in newest(receiver), "the first level")
        level = newest(receiver)[(STORE, GTIN)]
        assert {k: level[k] for k in ("on_hand", "reserved", "committed", "safety_stock")} == {
            "on_hand": 8,
            "reserved": 0,
            "committed": 0,
            "safety_stock": SAFETY,
        }
        assert level["available"] == 7
        assert level["updated_at"].endswith("Z")
        for post in receiver.received:
            verify(post)

        # an order reserves 3: the level moves although RFID saw nothing
        assert (await shop.order((GTIN, 3))).status_code == 201
        await until(lambda: newest(receiver)[(STORE, GTIN)]["reserved"] == 3, "the reservation")
        assert newest(receiver)[(STORE, GTIN)]["available"] == 4
        assert (await shop.stock())["available"] == 4  # the same model as the API


async def test_changes_within_the_debounce_are_one_post_with_the_newest_figures(
    shop: Shop, receiver: WebhookServer
) -> None:
    await shop.shelves(GTIN=1, OTHER_GTIN=1)
    async with sending(shop, receiver, debounce_s=1.5):
        await until(lambda: len(receiver.received) == 1, "the start-up reconcile")
        for count in (5, 6, 7, 8):
            await shop.shelves(GTIN=count, OTHER_GTIN=1)
        await until(lambda: newest(receiver)[(STORE, GTIN)]["on_hand"] == 8, "the newest count")
        await asyncio.sleep(2.0)  # anything else would have gone out by now
    later = [r.body["levels"] for r in receiver.received[1:]]
    assert later == [[newest(receiver)[(STORE, GTIN)]]], later  # OTHER_GTIN did not change


async def test_a_failing_receiver_gets_the_same_delivery_again_until_it_answers(
    shop: Shop, receiver: WebhookServer
) -> None:
    receiver.fail_next = 2
    async with sending(shop, receiver) as sender:
        await shop.shelves(GTIN=4)
        await until(lambda: any(r.status < 300 for r in receiver.received), "a delivery")
        assert [r.status for r in receiver.received] == [503, 503, 204]
        assert len({r.delivery for r in receiver.received}) == 1
        assert len({r.raw for r in receiver.received}) == 1  # the same signed body
        assert sender.stats.retries == 2


async def test_given_up_levels_are_sent_by_the_next_reconcile(
    shop: Shop, receiver: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_next = 2
    with caplog.at_level(logging.WARNING, "cloud.inventory.webhooks"):
        async with sending(shop, receiver, max_attempts=2, reconcile_s=1.0) as sender:
            await shop.shelves(GTIN=4)
            await until(lambda: any(r.status < 300 for r in receiver.received), "the reconcile")
    assert sender.stats.failed_posts == 1
    assert "2 attempts (HTTP 503)" in caplog.text
    assert "next reconcile" in caplog.text
    assert newest(receiver)[(STORE, GTIN)]["on_hand"] == 4


async def test_a_restarted_sender_sends_only_what_the_receiver_has_not_seen(
    shop: Shop, receiver: WebhookServer
) -> None:
    await shop.shelves(GTIN=4, OTHER_GTIN=9)
    async with sending(shop, receiver) as sender:
        await until(lambda: len(delivered(receiver)) == 2, "both levels")
        await until(lambda: sender.stats.rounds == 1, "the levels recorded as sent")
    # while no sender runs (a restart), one level changes and no change is announced
    shop_bus_off = shop.bus
    await shop.shelves(GTIN=4, OTHER_GTIN=2)
    assert shop_bus_off.subscribers == 0
    async with sending(shop, receiver):
        await until(lambda: len(delivered(receiver)) == 3, "the missed change")
        await asyncio.sleep(0.5)
    assert [(lv["gtin"], lv["on_hand"]) for lv in delivered(receiver)[2:]] == [(OTHER_GTIN, 2)]
