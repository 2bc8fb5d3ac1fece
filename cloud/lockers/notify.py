"""Shopper notifications: an `OrderUpdate` on the app's MQTT topic, and an HTTP webhook
with retries through a bounded persistent queue.

The MQTT message (`storegate/v1/shopper/{inbox}/orders`, only for orders placed with the
app's inbox) is queued on the transaction and published QoS 1 after the commit.

A notification is a row in `locker_notifications`, written in the same transaction as the
order transition it announces, so it is neither lost (the transition committed) nor sent
for a transition that rolled back. The delivery worker POSTs due rows one at a time:

- 2xx: `delivered`;
- anything else (status, timeout, refused connection): `attempts += 1`, retried after
  `backoff_base_s * 2^(attempts-1)` capped at `backoff_max_s`; after `max_attempts` the
  row is `failed` with the last error. Both stay visible in the API.
- The queue is bounded: at most `queue_size` rows `pending`; queuing one more marks the
  oldest pending row `dropped` ("queue full") and logs a warning — the newest state of an
  order is what a shopper needs.

Receivers get `X-Storegate-Delivery: <id>` so a retry after a lost 2xx is recognisable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.domains import DomainTx
from cloud.lockers import tables
from cloud.lockers.config import WebhookConfig
from cloud.lockers.machine import OrderState
from cloud.lockers.views import as_utc, order_view
from cloud.state.db import writing
from protocols.codec import encode, topic_for
from protocols.messages import OrderUpdate, utc_now

log = logging.getLogger(__name__)

NOTIFY_STATES = frozenset(
    {
        OrderState.READY_FOR_PICKUP,
        OrderState.COLLECTED,
        OrderState.EXPIRED,
        OrderState.CANCELLED,
    }
)
_BATCH = 20
_IDLE_S = 0.5


class Notifier:
    def __init__(self, webhook: WebhookConfig | None, cloud_node: str = "cloud") -> None:
        self.webhook = webhook
        self.cloud_node = cloud_node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    async def queue(
        self, tx: DomainTx, order: dict[str, Any], state: OrderState, at: datetime
    ) -> None:
        """Queue the shopper's app message (MQTT, after the commit) and the webhook call
        for this transition (inside the caller's transaction)."""
        if order.get("shopper"):
            message = OrderUpdate(
                store=order["store_id"],
                node=self.cloud_node,
                seq=0,  # cloud -> app messages are not sequenced (as offers)
                event_time=at,
                shopper=order["shopper"],
                order_id=order["order_id"],
                state=state.value,
                bank=order.get("bank"),
                compartment=order.get("compartment"),
                hold_until=as_utc(hold) if (hold := order.get("hold_until")) else None,
            )
            tx.publish(topic_for(message), encode(message))
        if self.webhook is None:
            return
        n = tables.notifications
        pending = (
            await tx.connection.execute(
                select(func.count()).select_from(n).where(n.c.status == "pending")
            )
        ).scalar_one()
        if pending >= self.webhook.queue_size:
            oldest = (
                await tx.connection.execute(
                    select(n.c.id).where(n.c.status == "pending").order_by(n.c.id).limit(1)
                )
            ).scalar_one()
            await tx.connection.execute(
                update(n)
                .where(n.c.id == oldest)
                .values(
                    status="dropped",
                    last_error=f"delivery queue full ({self.webhook.queue_size} pending)",
                    updated_at=at,
                )
            )
            self.dropped += 1
            log.warning("webhook queue full: dropped notification %s", oldest)
        await tx.connection.execute(
            insert(n).values(
                order_id=order["order_id"],
                store_id=order["store_id"],
                channel="webhook",
                payload={"event": "order", **order_view(order, state.value, at)},
                status="pending",
                attempts=0,
                next_at=at,
                created_at=at,
                updated_at=at,
            )
        )
        self._wake.set()  # early look; the row becomes visible once the caller commits

    # ------------------------------------------------------------------ delivery

    def start(self, engine: AsyncEngine) -> None:
        if self.webhook is not None:
            self._task = asyncio.create_task(self._run(engine, self.webhook), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, engine: AsyncEngine, webhook: WebhookConfig) -> None:
        async with httpx.AsyncClient(timeout=webhook.timeout_s) as client:
            while True:
                try:
                    sent = await self._deliver_due(engine, client, webhook)
                except Exception:  # the database hiccuped: keep the worker alive
                    log.exception("webhook delivery round failed")
                    sent = 0
                if sent == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_IDLE_S):
                            await self._wake.wait()

    async def _deliver_due(
        self, engine: AsyncEngine, client: httpx.AsyncClient, webhook: WebhookConfig
    ) -> int:
        n = tables.notifications
        now = utc_now()
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(n)
                    .where(n.c.status == "pending", n.c.next_at <= now)
                    .order_by(n.c.next_at, n.c.id)
                    .limit(_BATCH)
                )
            ).all()
        for row in rows:
            error = await self._post(client, webhook, row.id, row.payload)
            attempts = row.attempts + 1
            done = utc_now()
            values: dict[str, Any] = {"attempts": attempts, "updated_at": done}
            if error is None:
                values |= {"status": "delivered", "last_error": None}
                self.delivered += 1
            elif attempts >= webhook.max_attempts:
                values |= {"status": "failed", "last_error": error}
                self.failed += 1
                log.warning(
                    "webhook for order %s failed after %d attempts: %s",
                    row.order_id,
                    attempts,
                    error,
                )
            else:
                delay = min(webhook.backoff_base_s * 2 ** (attempts - 1), webhook.backoff_max_s)
                values |= {"last_error": error, "next_at": done + timedelta(seconds=delay)}
            async with writing(engine) as connection:
                await connection.execute(update(n).where(n.c.id == row.id).values(**values))
        return len(rows)

    @staticmethod
    async def _post(
        client: httpx.AsyncClient, webhook: WebhookConfig, delivery: int, payload: Any
    ) -> str | None:
        """None on success, else why it failed (never the response body: it may echo data)."""
        try:
            response = await client.post(
                str(webhook.url), json=payload, headers={"X-Storegate-Delivery": str(delivery)}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
