"""Inventory domain: reorder points → low-stock alerts, planograms → misplaced-item alerts,
availability for the online channel, store operations (replenishment tasks, sales and
exits, reorder suggestions, accuracy against book stock) (docs/inventory.md).

Alerts are evaluated inside the ingest batch transaction, after the core state has written
the batch's counts (`before_commit`), so an alert commits (or rolls back) with the counts
that caused it, and its `alert` live change goes out only after the commit. API changes to
reorder points and planograms re-evaluate the store in their own transaction.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from cloud.domains import Domain, DomainContext, DomainTx
from cloud.inventory.config import InventoryOptions, parse_options
from cloud.inventory.evaluate import AlertEvaluator, changed_counts
from cloud.inventory.notify import AlertNotifier, NotifySecrets, load_secrets
from cloud.inventory.replenish import TASK, Replenisher, stored_minimums_of
from cloud.inventory.sales import on_item_events
from cloud.inventory.webhooks import LevelWebhookSender, load_secret
from protocols.messages import (
    Birth,
    ItemEventKind,
    Message,
    RfidEvents,
    RfidSnapshot,
    utc_now,
)

if TYPE_CHECKING:
    from fastapi import APIRouter

    from cloud.config import CloudSettings

ALERT = "alert"  # the live-change kind
RECENT_KEYS = 10_000  # (store, shelf, gtin) keys whose recent EPCs are remembered (LRU)


class RecentEpcs:
    """The last few EPCs that arrived on or moved to each (store, shelf, GTIN), so a
    misplaced-item alert can say which items to look for. Bounded: LRU over keys."""

    def __init__(self, per_key: int, max_keys: int = RECENT_KEYS) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._epcs: OrderedDict[tuple[str, str, str], deque[str]] = OrderedDict()

    def add(self, store: str, shelf: str, gtin: str, epc: str) -> None:
        if self.per_key == 0:
            return
        key = (store, shelf, gtin)
        epcs = self._epcs.get(key)
        if epcs is None:
            epcs = self._epcs[key] = deque(maxlen=self.per_key)
            while len(self._epcs) > self.max_keys:
                self._epcs.popitem(last=False)
        else:
            self._epcs.move_to_end(key)
        if epc in epcs:
            epcs.remove(epc)
        epcs.append(epc)

    def get(self, store: str, shelf: str, gtin: str) -> list[str]:
        return list(self._epcs.get((store, shelf, gtin), ()))


class InventoryDomain(Domain):
    name = "inventory"

    def __init__(
        self,
        options: InventoryOptions,
        webhook_secret: bytes | None = None,
        notify_secrets: NotifySecrets | None = None,
    ) -> None:
        self.options = options
        self.notifier = AlertNotifier(options.notifications, notify_secrets or NotifySecrets())
        self.webhooks: LevelWebhookSender | None = None
        if options.webhook is not None:
            if webhook_secret is None:
                raise ValueError("webhook: no signing key")
            self.webhooks = LevelWebhookSender(
                options.webhook,
                options.availability.safety_for,
                webhook_secret,
                zones=options.zones,
            )
        self.recent = RecentEpcs(options.recent_epcs)
        self.evaluator = AlertEvaluator(options, self.recent.get)
        self.replenisher = Replenisher(options)
        # stores whose shelves a birth or snapshot replaced in the current batch: rows it
        # deleted are not in `tx.inventory_changes`, so those stores are evaluated whole
        self._batch: DomainTx | None = None
        self._replaced: set[str] = set()

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if not live:
            return
        if self._batch is not tx:
            self._batch, self._replaced = tx, set()
        if isinstance(message, Birth | RfidSnapshot):
            self._replaced.add(message.store)
        elif isinstance(message, RfidEvents):
            for data in await on_item_events(
                tx.connection, message.store, message.items, self.options.zones, utc_now()
            ):
                tx.change(ALERT, message.store, data)
            for item in message.items:
                if (
                    item.kind in (ItemEventKind.ARRIVED, ItemEventKind.MOVED)
                    and item.gtin is not None
                    and item.shelf is not None
                ):
                    self.recent.add(message.store, item.shelf, item.gtin, item.epc)

    async def before_commit(self, tx: DomainTx) -> None:
        replaced = self._replaced if self._batch is tx else set()
        self._batch, self._replaced = None, set()
        changed_by_store = {
            store: None if store in replaced else changed_counts(tx.inventory_changes[store])
            for store in replaced | set(tx.inventory_changes)
        }
        evaluated = await self.evaluator.evaluate_batch(tx.connection, changed_by_store)
        for store, changes in evaluated.items():
            for data in changes:
                tx.change(ALERT, store, data)
        now = utc_now()
        # one read of the API-set floor minimums for the batch's stores, not one per store
        stored = await stored_minimums_of(tx.connection, changed_by_store)
        for store, changed in sorted(changed_by_store.items()):
            gtins = None if changed is None else {gtin for _shelf, gtin in changed}
            changes = await self.replenisher.evaluate(
                tx.connection, store, gtins, now, stored=stored[store]
            )
            for data in changes:
                tx.change(TASK, store, data)

    def router(self) -> APIRouter:
        from cloud.inventory.api import create_router

        return create_router(self)

    async def start(self, context: DomainContext) -> None:
        self.notifier.start(context.bus)
        if self.webhooks is not None:
            self.webhooks.start(context.engine, context.bus)

    async def stop(self) -> None:
        await self.notifier.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> InventoryDomain:
    parsed = parse_options(options)
    secret = load_secret(parsed.webhook) if parsed.webhook is not None else None
    return InventoryDomain(parsed, secret, load_secrets(parsed.notifications))
