"""N ingestor replicas, each store's streams consumed by exactly one of them: shards by store.

`ingest.shards` = N > 1 splits the stores into N shards by a stable hash of the store id
(`shard_of`). Each shard is one persistent MQTT session, client id `<ingest.client_id>-s<k>`,
subscribed to `storegate/v1/{store}/+/#` for every store of the shard (MQTT wildcards cannot
hash, so the filters are explicit). A replica consumes a shard only while it holds the
shard's lease in PostgreSQL (cloud/ingest/leases.py); the session moves with the lease, and
the broker keeps what arrives in between in the session's queue.

- **Balance.** Every `lease_renew_s` a replica heartbeats, renews its leases and holds at
  most ceil(N / live replicas): it takes free or expired shards up to that, and hands extra
  ones over gracefully (the batch in progress commits and is acked, the session
  disconnects, then the lease is released).
- **Fencing.** Every batch of a shard commits only if the lease token is still the one the
  replica was given (checked in the batch's own transaction); a refused batch is not acked
  and its messages go to the new holder.
- **Self-fencing.** A shard whose lease could not be renewed stops one renew interval
  before the lease can expire; a session that lost its lease, or was taken over at the
  broker, never connects again (a takeover by the same client id would otherwise go back
  and forth). Taking the shard again means a new lease, with a new token and a fresh
  consumer that reads its stream positions from the database.
- **New stores.** The stores table is read every `store_poll_s`: a store registered on any
  replica (config, `POST /api/v1/stores`) is subscribed within seconds. Its edges resend
  what is not committed, so messages published before that are not lost.

Batches of all the shards of one process commit one at a time (a shared lock): domains
keep per-batch state, and throughput grows with replicas, not with shards per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.domains import Domain
from cloud.ingest.apply import BatchOutcome, StateApplier
from cloud.ingest.consumer import Consumer
from cloud.ingest.fairness import store_of
from cloud.ingest.history import History
from cloud.ingest.leases import Lease, LeaseTable
from cloud.ingest.registry import Registry
from cloud.metrics import CloudMetrics
from protocols.mqtt import MqttSettings
from protocols.topics import node_filter

log = logging.getLogger(__name__)

STORAGE_ERRORS = (DBAPIError, OSError, TimeoutError)


def shard_of(store: str, shards: int) -> int:
    """The shard of a store: the same on every replica and every run (not Python's `hash`,
    which is salted per process)."""
    digest = hashlib.blake2b(store.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_client_id(base: str, shard: int) -> str:
    """The shard's MQTT client id, which is also its login's user name."""
    return f"{base}-s{shard}"


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:128]


@dataclass(eq=False)
class _Shard:
    """One leased shard: its session settings, stores, consumer and worker task."""

    lease: Lease
    mqtt: MqttSettings
    valid_until: float  # monotonic: past it the lease may have expired at the database
    stores: set[str] = field(default_factory=set)
    consumer: Consumer | None = None
    task: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None  # handing over or being dropped

    def filters(self) -> list[str]:
        return [node_filter(store) for store in sorted(self.stores)]

    def may_connect(self) -> bool:
        fenced = self.consumer is not None and self.consumer.fenced
        return not fenced and self.ending is None and time.monotonic() < self.valid_until


class ShardedIngest:
    def __init__(
        self,
        settings: CloudSettings,
        engine: AsyncEngine,
        registry: Registry,
        history: History,
        metrics: CloudMetrics,
        bus: LiveBus,
        *,
        domains: Sequence[Domain] = (),
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = settings.ingest
        self.engine = engine
        self.registry = registry
        self.history = history
        self.metrics = metrics
        self.bus = bus
        self.domains = tuple(domains)
        self.on_batch = on_batch
        self.replica = self.ingest.replica_id or default_replica_id()
        self.leases = LeaseTable(
            engine, self.replica, shards=self.ingest.shards, ttl_s=self.ingest.lease_ttl_s
        )
        self._shards: dict[int, _Shard] = {}
        self._apply_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._ticked = False  # one lease round done: readiness means something
        self._stopping = False

    # ------------------------------------------------------------------ for the runtime

    def held(self) -> list[int]:
        """The shards this replica consumes now (hand-overs in progress included)."""
        return sorted(k for k, s in self._shards.items() if s.consumer and not s.consumer.fenced)

    def connected(self) -> bool:
        """Ready: a lease round is done and every shard held has its session up."""
        consumers = [s.consumer for s in self._shards.values() if s.ending is None]
        return self._ticked and all(c is not None and c.connected.is_set() for c in consumers)

    def publish(self, topic: str, payload: bytes) -> None:
        """A domain's message (a command, an order update): through the session of the
        store's shard when held here, else through any session of this replica."""
        store = store_of(topic)
        wanted = self._shards.get(shard_of(store, self.ingest.shards)) if store else None
        candidates = [wanted] if wanted is not None else []
        candidates += sorted(self._shards.values(), key=lambda s: s.lease.shard)
        for shard in candidates:
            consumer = shard.consumer
            if consumer is not None and not consumer.fenced and shard.ending is None:
                # paho's publish is thread-safe and queues while disconnected (QoS 1).
                consumer.client.publish(topic, payload, qos=1)
                return
        log.error(
            "cannot publish on %s: this replica holds no shard session (more replicas than"
            " shards?); the message is dropped",
            topic,
        )

    async def start(self) -> None:
        await self.leases.prepare()
        await self._round()
        self._tasks = [
            asyncio.create_task(self._keep_leases(), name="shard-leases"),
            asyncio.create_task(self._watch_stores(), name="shard-stores"),
        ]
        log.info("replica %s: %d shards, holds %s", self.replica, self.ingest.shards, self.held())

    async def stop(self) -> None:
        """Hand every shard over: last batches committed and acked, sessions closed, leases
        released, this replica no longer counted."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for shard in list(self._shards.values()):
            if shard.ending is None:
                shard.ending = asyncio.create_task(self._hand_over(shard))
        for shard in list(self._shards.values()):
            if shard.ending is not None:
                await shard.ending
        with contextlib.suppress(*STORAGE_ERRORS):
            await self.leases.leave()

    # ------------------------------------------------------------------ leases

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.ingest.lease_renew_s)
            try:
                await self._round()
            except Exception:  # a bug here must not leave shards unrenewed silently
                log.exception("lease round failed; shards not renewed stop in time")
                self._stop_expiring()

    async def _round(self) -> None:
        """Heartbeat, renew, drop what is lost, then take or hand over toward a fair share."""
        started = time.monotonic()
        ttl, renew = self.ingest.lease_ttl_s, self.ingest.lease_renew_s
        renewing = [s for s in self._shards.values() if not self._lost(s)]
        try:
            live = await self.leases.heartbeat()
            kept = await self.leases.renew([s.lease for s in renewing])
        except STORAGE_ERRORS as exc:
            log.warning("cannot renew shard leases (%s); retrying", exc)
            self._stop_expiring()
            return
        for shard in renewing:
            if shard.lease.shard in kept:
                # The database set expires_at after `started`: stop one interval before it.
                shard.valid_until = started + ttl - renew
            else:
                self._drop(shard, "its lease was taken over")
        for shard in list(self._shards.values()):
            if self._lost(shard) and shard.ending is None:
                self._drop(shard, "its session was fenced or taken over")
        self._stop_expiring()
        self._ticked = True
        if self._stopping:
            return
        target = math.ceil(self.ingest.shards / live)
        active = sorted(
            (s for s in self._shards.values() if s.ending is None), key=lambda s: s.lease.shard
        )
        for shard in active[target:]:
            log.info(
                "replica %s: %d live replicas, %d shards each at most: handing over shard %d",
                self.replica,
                live,
                target,
                shard.lease.shard,
            )
            shard.ending = asyncio.create_task(self._hand_over(shard))
        for _ in range(target - len(active)):
            try:
                lease = await self.leases.acquire()
            except STORAGE_ERRORS as exc:
                log.warning("cannot take a shard lease (%s); retrying", exc)
                return
            if lease is None:
                break
            await self._start_shard(lease, started)
        self.metrics.shards_held.set(len(self.held()))

    def _lost(self, shard: _Shard) -> bool:
        return shard.consumer is not None and shard.consumer.fenced

    def _stop_expiring(self) -> None:
        """Self-fencing: a shard not renewed in time stops before its lease can expire."""
        now = time.monotonic()
        for shard in list(self._shards.values()):
            if now < shard.valid_until or self._lost(shard):
                continue
            if shard.ending is None:
                self._drop(shard, "its lease could not be renewed in time")
            elif shard.consumer is not None:
                shard.consumer.fence_off()  # mid hand-over: its last batch must not commit

    def _drop(self, shard: _Shard, why: str) -> None:
        """Stop a shard at once, without a hand-over: it is (or may soon be) someone else's."""
        log.error(
            "replica %s: stopping shard %d (token %d): %s; its unacked messages go to the"
            " next holder",
            self.replica,
            shard.lease.shard,
            shard.lease.token,
            why,
        )
        self.metrics.shard_leases_lost.inc()
        if shard.consumer is not None:
            shard.consumer.fence_off()
        shard.ending = asyncio.create_task(self._end(shard))

    async def _end(self, shard: _Shard) -> None:
        try:
            if shard.task is not None:
                await shard.task
            if shard.consumer is not None:
                await shard.consumer.close()
        finally:
            self._forget(shard)

    async def _hand_over(self, shard: _Shard) -> None:
        """Finish and ack the batch in progress, disconnect, then release the lease."""
        try:
            if shard.consumer is not None:
                shard.consumer.stop()
            if shard.task is not None:
                await shard.task
            if shard.consumer is not None:
                await shard.consumer.close()
            if shard.consumer is None or not shard.consumer.fenced:
                try:
                    await self.leases.release(shard.lease)
                except STORAGE_ERRORS as exc:
                    log.warning(
                        "shard %d handed over but its lease not released (%s): it expires"
                        " in %.0f s",
                        shard.lease.shard,
                        exc,
                        self.ingest.lease_ttl_s,
                    )
        finally:
            self._forget(shard)

    def _forget(self, shard: _Shard) -> None:
        if self._shards.get(shard.lease.shard) is shard:
            del self._shards[shard.lease.shard]
        self.metrics.shards_held.set(len(self.held()))

    async def _start_shard(self, lease: Lease, renewed_at: float) -> None:
        previous = self._shards.get(lease.shard)
        if previous is not None and previous.ending is not None:
            await previous.ending  # the old session of this shard closes first
        mqtt = self.settings.mqtt
        client_id = shard_client_id(self.ingest.client_id, lease.shard)
        password = self.ingest.shard_password or mqtt.password
        shard = _Shard(
            lease=lease,
            mqtt=mqtt.model_copy(
                update={
                    "client_id": client_id,
                    "username": client_id if mqtt.username is not None else None,
                    "password": password if mqtt.username is not None else None,
                }
            ),
            valid_until=renewed_at + self.ingest.lease_ttl_s - self.ingest.lease_renew_s,
            stores=self._stores_of(lease.shard),
        )
        # A fresh applier: stream positions are read from the database, as the previous
        # holder committed them, never from a cache of an earlier turn with this shard.
        applier = StateApplier(
            self.engine,
            self.registry,
            self.history,
            self.metrics,
            self.ingest,
            domains=self.domains,
            fence=partial(self.leases.fence, lease=lease),
        )
        consumer = Consumer(
            self.settings,
            applier,
            self.metrics,
            self.bus,
            on_batch=self.on_batch,
            session=shard,
            apply_lock=self._apply_lock,
        )
        shard.consumer = consumer
        self._shards[lease.shard] = shard
        consumer.start()
        shard.task = asyncio.create_task(consumer.run(), name=f"ingest-shard-{lease.shard}")
        log.info(
            "replica %s: took shard %d (token %d, %d stores) as %s",
            self.replica,
            lease.shard,
            lease.token,
            len(shard.stores),
            client_id,
        )

    # ------------------------------------------------------------------ stores

    def _stores_of(self, shard: int) -> set[str]:
        shards = self.ingest.shards
        return {store for store in self.registry.stores if shard_of(store, shards) == shard}

    async def _watch_stores(self) -> None:
        while True:
            await asyncio.sleep(self.ingest.store_poll_s)
            try:
                await self.registry.load(self.engine)
            except STORAGE_ERRORS as exc:
                log.warning("cannot read the stores table (%s); retrying", exc)
                continue
            self.subscribe_new_stores()

    def subscribe_new_stores(self) -> None:
        for shard in self._shards.values():
            if shard.consumer is None or shard.ending is not None:
                continue
            new = self._stores_of(shard.lease.shard) - shard.stores
            if new:
                shard.stores |= new
                shard.consumer.subscribe_more([node_filter(store) for store in sorted(new)])
                log.info("shard %d: subscribed to new stores %s", shard.lease.shard, sorted(new))
