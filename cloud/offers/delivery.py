"""Getting offers to shoppers, and knowing that they got there.

- MQTT: the engine queues the Offer on the shopper's topic with `tx.publish` (QoS 1,
  released after the commit). `DeliveryListener` subscribes to `shopper/+/offers` and marks
  an offer `delivered` when the broker routes it back: proof that the broker accepted it.
- Webhook: `WebhookSender` POSTs each triggered offer (JSON, HMAC-signed) to the configured
  URL. The `offers` table is the durable queue (`webhook_state = pending`); at most
  `queue_size` deliveries are in memory at a time, the rest wait in the table. Retries back
  off exponentially (with jitter) up to `max_attempts`, then the delivery is `failed` with
  the last error. A 2xx marks the offer delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as paho
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.broker.policy import OFFERS_LISTENER_SUFFIX
from cloud.bus import Change, LiveBus
from cloud.offers import tables
from cloud.offers.options import OffersOptions, WebhookOptions
from cloud.signing import signature
from cloud.state.db import writing
from protocols.messages import utc_now
from protocols.mqtt import MqttSettings, new_client
from protocols.topics import OFFERS_LEVEL, SHOPPER_LEVEL, TOPIC_PREFIX

log = logging.getLogger(__name__)

# Status only moves forward: triggered < delivered < opened < redeemed.
STAGES = ("triggered", "delivered", "opened", "redeemed")
LISTENER_QUEUE = 10_000
PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}


def earlier_stages(stage: str) -> tuple[str, ...]:
    return STAGES[: STAGES.index(stage)]


async def advance(
    engine: AsyncEngine, offer_ids: list[str], stage: str, at: datetime, bus: LiveBus | None
) -> list[str]:
    """Move offers to `stage`, never backwards; returns the ids that moved.

    Every stage up to `stage` gets its first timestamp (an opened offer was delivered).
    """
    o = tables.offers
    earlier = earlier_stages(stage)
    stamps: dict[str, Any] = {
        f"{s}_at": func.coalesce(o.c[f"{s}_at"], at) for s in STAGES[1 : STAGES.index(stage) + 1]
    }
    async with writing(engine) as connection:
        rows = (
            await connection.execute(
                select(o.c.offer_id, o.c.store_id, o.c.campaign_id, o.c.zone).where(
                    o.c.offer_id.in_(offer_ids), o.c.status.in_(earlier)
                )
            )
        ).all()
        if rows:
            await connection.execute(
                update(o)
                .where(o.c.offer_id.in_([r.offer_id for r in rows]), o.c.status.in_(earlier))
                .values(status=stage, **stamps)
            )
    if bus is not None:
        for row in rows:
            bus.publish(
                Change(
                    "offer",
                    row.store_id,
                    {
                        "offer_id": row.offer_id,
                        "store": row.store_id,
                        "campaign": row.campaign_id,
                        "zone": row.zone,
                        "status": stage,
                        "reason": None,
                    },
                )
            )
    return [row.offer_id for row in rows]


class DeliveryListener:
    """Marks offers delivered when the broker routes them (a subscriber of our own)."""

    def __init__(
        self, mqtt: MqttSettings, engine: AsyncEngine, bus: LiveBus, *, ingest_client_id: str
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.queue: queue.Queue[str] = queue.Queue(LISTENER_QUEUE)
        self.dropped = 0  # the offer was delivered anyway; only its delivered_at is missing
        self.delivered = 0
        self.mqtt = mqtt
        # A session of its own beside the ingestor's (two clients with one id would take
        # the connection from each other in turn), so a login of its own: the broker pins
        # each login to one client id (cloud/broker/policy.py).
        listener = f"{mqtt.client_id or ingest_client_id}{OFFERS_LISTENER_SUFFIX}"
        username = f"{mqtt.username}{OFFERS_LISTENER_SUFFIX}" if mqtt.username else None
        self.client = new_client(
            mqtt.model_copy(update={"client_id": listener, "username": username}),
            listener,
            clean_start=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._task: asyncio.Task[None] | None = None

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        client.subscribe(f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/+/{OFFERS_LEVEL}", qos=1)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            offer_id = json.loads(message.payload)["offer_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("not an offer on %s; ignored", message.topic)
            return
        try:
            self.queue.put_nowait(str(offer_id))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        self.client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        self.client.loop_start()
        self._task = asyncio.create_task(self._drain(), name="offers-delivered")

    async def _drain(self) -> None:
        while True:
            ids: list[str] = []
            with contextlib.suppress(queue.Empty):
                while len(ids) < 500:
                    ids.append(self.queue.get_nowait())
            if not ids:
                await asyncio.sleep(0.05)
                continue
            try:
                self.delivered += len(
                    await advance(self.engine, ids, "delivered", utc_now(), self.bus)
                )
            except Exception:
                log.exception("could not record %d deliveries", len(ids))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.client.disconnect()
        self.client.loop_stop()


class WebhookSender:
    def __init__(
        self,
        options: WebhookOptions,
        engine: AsyncEngine,
        bus: LiveBus,
        *,
        client: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        assert options.url is not None
        self.url = options.url
        self.options = options
        self.engine = engine
        self.bus = bus
        self._client_factory = client or (lambda: httpx.AsyncClient(timeout=options.timeout_s))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="offers-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with self._client_factory() as client:
            while True:
                try:
                    due = await self._due()
                except Exception:
                    log.exception("webhook: could not read pending deliveries")
                    due = []
                if due:
                    await self._deliver_all(client, due)
                    if len(due) == self.options.queue_size:
                        continue  # more are waiting in the table
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.poll_s):
                        await self._wake.wait()

    async def _deliver_all(self, client: httpx.AsyncClient, due: list[Any]) -> None:
        limit = asyncio.Semaphore(self.options.concurrency)

        async def one(row: Any) -> None:
            async with limit:
                await self._deliver(client, row)

        await asyncio.gather(*(one(row) for row in due))

    async def _due(self) -> list[Any]:
        o = tables.offers
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(o.c.offer_id, o.c.payload, o.c.webhook_attempts, o.c.shopper_id)
                .where(
                    o.c.webhook_state == "pending",
                    or_(o.c.webhook_next_at.is_(None), o.c.webhook_next_at <= utc_now()),
                )
                .order_by(o.c.webhook_next_at)
                .limit(self.options.queue_size)
            )
            return list(rows)

    async def _deliver(self, client: httpx.AsyncClient, row: Any) -> None:
        body = json.dumps(
            {"event": "offer.triggered", "shopper_id": row.shopper_id, "offer": row.payload},
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json", "x-storegate-offer": row.offer_id}
        if self.options.secret is not None:
            headers["x-storegate-signature"] = signature(
                self.options.secret.get_secret_value(), body
            )
        error: str | None = None
        permanent = False
        try:
            response = await client.post(self.url, content=body, headers=headers)
            if 200 <= response.status_code < 300:
                await self._finish(row.offer_id, "done", None, row.webhook_attempts + 1)
                await advance(self.engine, [row.offer_id], "delivered", utc_now(), self.bus)
                self.sent += 1
                return
            error = f"HTTP {response.status_code}"
            permanent = response.status_code in PERMANENT_HTTP
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row.webhook_attempts + 1
        if permanent or attempts >= self.options.max_attempts:
            log.warning("webhook for offer %s failed for good: %s", row.offer_id, error)
            await self._finish(row.offer_id, "failed", error, attempts)
            # Counted only once the row says so: readers of the counter may act on the row.
            self.failed += 1
            return
        delay = min(self.options.backoff_max_s, self.options.backoff_min_s * 2 ** (attempts - 1))
        delay *= random.uniform(0.8, 1.2)
        o = tables.offers
        async with writing(self.engine) as connection:
            await connection.execute(
                update(o)
                .where(o.c.offer_id == row.offer_id)
                .values(
                    webhook_attempts=attempts,
                    webhook_error=error,
                    webhook_next_at=utc_now() + timedelta(seconds=delay),
                )
            )

    async def _finish(self, offer_id: str, state: str, error: str | None, attempts: int) -> None:
        o = tables.offers
        async with writing(self.engine) as connection:
            await connection.execute(
                update(o)
                .where(o.c.offer_id == offer_id)
                .values(webhook_state=state, webhook_error=error, webhook_attempts=attempts)
            )


__all__ = ["DeliveryListener", "OffersOptions", "WebhookSender", "advance", "signature"]
