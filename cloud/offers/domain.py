"""The offers domain: the engine in the ingest transaction, delivery and upkeep around it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from cloud.domains import Domain, DomainContext, DomainTx
from cloud.offers import registry
from cloud.offers.delivery import DeliveryListener, WebhookSender
from cloud.offers.engine import CampaignCache, OfferEngine
from cloud.offers.metrics import OffersCollector
from cloud.offers.options import OffersOptions
from protocols.messages import BlePresence, Message

if TYPE_CHECKING:
    from fastapi import APIRouter

    from cloud.bus import Subscription

log = logging.getLogger(__name__)


class OffersDomain(Domain):
    name = "offers"

    def __init__(self, options: OffersOptions) -> None:
        self.options = options
        self.campaigns = CampaignCache()
        self.engine = OfferEngine(options, self.campaigns)
        self.listener: DeliveryListener | None = None
        self.webhook: WebhookSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        # Presence of the batch in progress. Decided in before_commit, still inside the
        # transaction, so that the stock gate sees the inventory this batch wrote (a restock
        # and an enter often arrive in one batch). Batches run one at a time; holding the
        # tx object makes a failed batch's leftovers unmistakable.
        self._batch_tx: DomainTx | None = None
        self._batch: list[BlePresence] = []

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        # Not live: already covered by the node's newer birth, so the moment has passed.
        if live and isinstance(message, BlePresence):
            if self._batch_tx is not tx:
                self._batch_tx, self._batch = tx, []
            self._batch.append(message)

    async def before_commit(self, tx: DomainTx) -> None:
        if self._batch_tx is not tx:
            return
        batch, self._batch_tx, self._batch = self._batch, None, []
        await self.engine.on_batch(tx, batch)

    def router(self) -> APIRouter:
        from cloud.offers.api import build_router

        return build_router(self.campaigns)

    async def start(self, context: DomainContext) -> None:
        context.metrics.registry.register(OffersCollector(self))
        if self.options.delivery_listener:
            self.listener = DeliveryListener(
                context.settings.mqtt,
                context.engine,
                context.bus,
                ingest_client_id=context.settings.ingest.client_id,
            )
            self.listener.start()
        if self.options.webhook.url is not None:
            self.webhook = WebhookSender(self.options.webhook, context.engine, context.bus)
            self.webhook.start()
            self._subscription = context.bus.subscribe()
            self._tasks.append(asyncio.create_task(self._wake_webhook(), name="offers-wake"))
        self._tasks.append(
            asyncio.create_task(self._housekeeping(context), name="offers-housekeeping")
        )

    async def _wake_webhook(self) -> None:
        """New triggered offers (after their commit) wake the sender at once."""
        assert self._subscription is not None
        assert self.webhook is not None
        while True:
            change = await self._subscription.get()
            if change.kind == "offer" and change.data.get("status") == "triggered":
                self.webhook.wake()

    async def _housekeeping(self, context: DomainContext) -> None:
        while True:
            try:
                removed = await registry.housekeeping(
                    context.engine,
                    visit_gap_s=self.options.visit_gap_s,
                    token_grace_s=self.options.token_grace_s,
                    retention_days=self.options.analytics_retention_days,
                )
                if any(removed.values()):
                    log.info("offers retention: removed %s", removed)
            except Exception:
                log.exception(
                    "offers retention pass failed; next try in %ss", self.options.housekeeping_s
                )
            await asyncio.sleep(self.options.housekeeping_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._subscription is not None:
            self._subscription.close()
        if self.webhook is not None:
            await self.webhook.stop()
        if self.listener is not None:
            await self.listener.stop()
