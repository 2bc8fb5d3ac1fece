"""Inventory-level webhooks: the online channel hears when what a store may sell changes,
as Shopify's `inventory_levels/update` or commercetools' inventory messages tell a storefront.

Level-triggered, not edge-triggered. A change on the live bus (RFID counts of a store and
GTIN, or an order of a store, which moves reservations) only marks what to look at; after
`debounce_s` the sender reads those levels from the database and compares each with the
last one delivered (`inventory_levels_sent`). Only differences go out, and a level is
recorded as sent only after the receiver answered 2xx. So:

- many changes within the debounce window are one POST with the newest figures;
- nothing depends on every change being announced: every `reconcile_s`, at start-up, and
  when the bus dropped changes or more than `max_pending` keys wait, every level is
  compared instead (a replaced snapshot, a restart, a failed delivery all heal there);
- a retried delivery carries the same `X-Storegate-Delivery` id, so a receiver that lost
  our connection after answering can recognise it.

A POST: `{"event": "inventory_levels.update", "delivery", "sent_at", "levels": [{store,
gtin, on_hand, reserved, committed, safety_stock, available, updated_at}]}` (`committed` is
Shopify's name for `reserved`), signed as every storegate webhook (cloud/signing.py), at
most `levels_per_post` levels. A failed POST is retried after `backoff_base_s * 2^n` up to
`backoff_max_s`, `max_attempts` times; then it is logged and left to the next reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.api.timestamps import iso_utc
from cloud.bus import Change, LiveBus, Subscription
from cloud.inventory.config import LevelWebhookOptions, ZoneOptions
from cloud.inventory.stock import Key, Level, levels
from cloud.inventory.tables import levels_sent
from cloud.signing import SIGNATURE_HEADER, signature
from cloud.state.db import upsert, writing
from protocols.messages import utc_now

log = logging.getLogger(__name__)

EVENT = "inventory_levels.update"
_KEYS_PER_QUERY = 500


def load_secret(options: LevelWebhookOptions) -> bytes:
    value = os.environ.get(options.secret_env, "")
    if not value:
        raise ValueError(
            f"webhook.secret_env: environment variable {options.secret_env} is not set"
        )
    return value.encode()


@dataclass
class SenderStats:
    posts: int = 0
    levels: int = 0
    failed_posts: int = 0
    retries: int = 0
    reconciles: int = 0
    rounds: int = 0  # finished, whatever they sent
    last_error: str | None = None


@dataclass
class _Pending:
    keys: set[Key] = field(default_factory=set)
    stores: set[str] = field(default_factory=set)
    everything: bool = True  # at start-up: compare every level once


class LevelWebhookSender:
    def __init__(
        self,
        options: LevelWebhookOptions,
        safety_for: Callable[[str], int],
        secret: bytes,
        *,
        client: Callable[[], httpx.AsyncClient] | None = None,
        zones: ZoneOptions | None = None,
    ) -> None:
        self.options = options
        self.safety_for = safety_for
        self.zones = zones
        self._secret = secret
        self._client = client or (lambda: httpx.AsyncClient(timeout=options.timeout_s))
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._recording: asyncio.Task[None] | None = None
        self.stats = SenderStats()

    # ------------------------------------------------------------------ what changed

    def touch(self, change: Change) -> None:
        """Mark what a live change may have moved."""
        if change.store is None:
            return
        if change.kind == "inventory":
            for item in change.data.get("items", ()):
                self._pending.keys.add((change.store, str(item["gtin"])))
            if len(self._pending.keys) > self.options.max_pending:
                self._pending.keys.clear()
                self._pending.everything = True
        elif change.kind == "order":
            self._pending.stores.add(change.store)
        else:
            return
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self, engine: AsyncEngine, bus: LiveBus) -> None:
        subscription = bus.subscribe()
        self._wake.set()  # the start-up round compares every level
        self._tasks = [
            asyncio.create_task(self._listen(subscription), name="level-webhook-listen"),
            asyncio.create_task(self._run(engine), name="level-webhook-send"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._recording is not None:
            await asyncio.gather(self._recording, return_exceptions=True)

    async def _listen(self, subscription: Subscription) -> None:
        dropped = subscription.dropped
        try:
            while True:
                change = await subscription.get()
                if subscription.dropped != dropped:  # we missed changes: compare everything
                    dropped = subscription.dropped
                    self._pending.everything = True
                    self._wake.set()
                self.touch(change)
        finally:
            subscription.close()

    async def _run(self, engine: AsyncEngine) -> None:
        next_reconcile = time.monotonic() + self.options.reconcile_s
        async with self._client() as client:
            while True:
                wait = max(0.0, next_reconcile - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                if time.monotonic() >= next_reconcile:
                    self._pending.everything = True
                    next_reconcile = time.monotonic() + self.options.reconcile_s
                await asyncio.sleep(self.options.debounce_s)
                self._wake.clear()
                pending, self._pending = self._pending, _Pending(everything=False)
                try:
                    await self.send_round(engine, client, pending)
                    self.stats.rounds += 1
                except Exception as exc:  # the database hiccuped: look at all of it again
                    log.exception("inventory-level webhook round failed")
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self._pending.everything = True
                    await asyncio.sleep(self.options.backoff_base_s)
                    self._wake.set()

    # ------------------------------------------------------------------ one round

    async def send_round(
        self, engine: AsyncEngine, client: httpx.AsyncClient, pending: _Pending
    ) -> int:
        """Deliver every level in `pending` that differs from what was last sent; returns
        the levels delivered."""
        async with engine.connect() as connection:
            if pending.everything:
                self.stats.reconciles += 1
                now_levels = await levels(connection, self.safety_for, zones=self.zones)
                sent = await _sent(connection, None)
                keys = set(now_levels) | set(sent)
            else:
                now_levels = {}
                if pending.stores:
                    now_levels |= await levels(
                        connection, self.safety_for, zones=self.zones, stores=pending.stores
                    )
                if pending.keys:
                    now_levels |= await levels(
                        connection, self.safety_for, zones=self.zones, keys=pending.keys
                    )
                sent = await _sent(connection, set(now_levels))
                keys = set(now_levels)
        changed = []
        for key in sorted(keys):
            level = now_levels.get(key) or Level(0, 0, self.safety_for(key[0]), 0, None)
            if sent.get(key) != (level.on_hand, level.reserved, level.available):
                changed.append((key, level))
        delivered = 0
        step = self.options.levels_per_post
        for start in range(0, len(changed), step):
            chunk = changed[start : start + step]
            if not await self._deliver(client, chunk):
                return delivered  # the rest waits for the next reconcile
            # Shielded: stop() cancels the sender, and a write cancelled half-way would leave
            # its connection (and on SQLite the write lock) held until it is collected.
            self._recording = asyncio.create_task(_record_sent(engine, chunk))
            await asyncio.shield(self._recording)
            delivered += len(chunk)
        return delivered

    async def _deliver(self, client: httpx.AsyncClient, chunk: list[tuple[Key, Level]]) -> bool:
        delivery = uuid.uuid4().hex
        body = json.dumps(
            {
                "event": EVENT,
                "delivery": delivery,
                "sent_at": iso_utc(utc_now()),
                "levels": [
                    {
                        "store": store,
                        "gtin": gtin,
                        "on_hand": level.on_hand,
                        "on_hand_by_zone": level.by_zone,
                        "reserved": level.reserved,
                        "committed": level.reserved,
                        "safety_stock": level.safety_stock,
                        "available": level.available,
                        "updated_at": iso_utc(level.updated_at),
                    }
                    for (store, gtin), level in chunk
                ],
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Storegate-Delivery": delivery,
            "X-Storegate-Event": EVENT,
            SIGNATURE_HEADER: signature(self._secret, body),
        }
        options = self.options
        for attempt in range(1, options.max_attempts + 1):
            error = await _post(client, str(options.url), body, headers)
            if error is None:
                self.stats.posts += 1
                self.stats.levels += len(chunk)
                return True
            self.stats.last_error = error
            if attempt == options.max_attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(
                min(options.backoff_base_s * 2 ** (attempt - 1), options.backoff_max_s)
            )
        self.stats.failed_posts += 1
        log.warning(
            "inventory-level webhook: %d levels not delivered after %d attempts (%s); the next"
            " reconcile (every %.0f s) sends them again",
            len(chunk),
            options.max_attempts,
            self.stats.last_error,
            options.reconcile_s,
        )
        return False


async def _record_sent(engine: AsyncEngine, chunk: list[tuple[Key, Level]]) -> None:
    async with writing(engine) as connection:
        now = utc_now()
        await upsert(
            connection,
            levels_sent,
            [
                {
                    "store_id": store,
                    "gtin": gtin,
                    "on_hand": level.on_hand,
                    "reserved": level.reserved,
                    "available": level.available,
                    "sent_at": now,
                }
                for (store, gtin), level in chunk
            ],
            keys=("store_id", "gtin"),
        )


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> str | None:
    """None on success, else why not (never the response body: it may echo data)."""
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def _sent(
    connection: AsyncConnection, keys: set[Key] | None
) -> dict[Key, tuple[int, int, int]]:
    s = levels_sent
    query = select(s.c.store_id, s.c.gtin, s.c.on_hand, s.c.reserved, s.c.available)
    out: dict[Key, tuple[int, int, int]] = {}
    if keys is None:
        chunks: list[list[Key] | None] = [None]
    else:
        wanted = sorted(keys)
        chunks = [wanted[i : i + _KEYS_PER_QUERY] for i in range(0, len(wanted), _KEYS_PER_QUERY)]
    for chunk in chunks:
        where = query if chunk is None else query.where(tuple_(s.c.store_id, s.c.gtin).in_(chunk))
        for store, gtin, on_hand, reserved, available in await connection.execute(where):
            out[(store, gtin)] = (int(on_hand), int(reserved), int(available))
    return out
