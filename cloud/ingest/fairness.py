"""The ingestor's queue of received messages, fair between stores.

All stores share one broker session, whose queue is first-in first-out: when the ingestor
stops reading, every store waits behind whoever filled the queue. So one store flooding its
topics (a bug, a replay gone wrong, an attacker with that store's login) must never make the
ingestor stop reading, and its backlog must not stand in front of other stores' messages.

Policy, stated:
- Below `capacity` messages held (queued or in the batch being applied; the ingestor uses
  half its `queue_size`) everything is accepted: a burst is not a flood.
- At or above `capacity`, a message is **shed** (acknowledged without being applied, and
  counted) when its store already holds at least twice its fair share: `capacity` divided by
  the stores heard from in the last `active_window_s`, and never less than `min_share`. A
  store within its share is still accepted, so balanced load is never shed; only a store
  taking more than twice its share of a full queue loses messages.
- The caller still stops reading at its own bound (the ingestor's `queue_size`, twice the
  capacity): that is reached only by stores that are each within their share, or by one
  store alone (then nobody else is waiting).
- Batches are taken round-robin across stores, so a message of a quiet store waits for one
  batch at most, whatever another store has queued.

Shedding loses nothing of a well-behaved edge: it keeps every message until the cloud has
committed it and sends again what stays unconfirmed (docs/architecture.md), and dedup makes
the resend harmless. Cross-store order is not a thing; order per stream is kept because one
store's messages stay first-in first-out.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("cloud.ingest")

T = TypeVar("T")

# A shed store is reported at most this often (with its count since the last line).
REPORT_EVERY_S = 60.0
# Stores remembered for the fair share at the most (the oldest quiet one is forgotten):
# store ids come from topics, which an attacker chooses.
MAX_TRACKED_STORES = 20_000


def store_of(topic: str) -> str:
    """The store level of `storegate/v1/{store}/...`, without parsing the whole topic."""
    parts = topic.split("/", 3)
    return parts[2] if len(parts) > 3 else ""


class FairQueue(Generic[T]):
    def __init__(
        self,
        capacity: int,
        *,
        active_window_s: float = 10.0,
        min_share: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.active_window_s = active_window_s
        self.min_share = min_share
        self._clock = clock
        self._queues: dict[str, deque[T]] = {}
        self._size = 0
        # Taken into the batch being applied, not yet acked: still held, still counted.
        self.in_flight = 0
        self._heard: dict[str, float] = {}  # store -> last message, oldest first
        self._order: deque[str] = deque()  # round-robin turn of stores with messages
        self.shed_total = 0
        self._shed_unreported: dict[str, int] = {}
        self._reported_at = clock()

    def __len__(self) -> int:
        return self._size

    def push(self, store: str, item: T) -> bool:
        """Queue `item` of `store`; False when it is shed (the caller acks it unapplied)."""
        now = self._clock()
        self._hear(store, now)
        queue = self._queues.get(store)
        held = 0 if queue is None else len(queue)
        if self._size + self.in_flight >= self.capacity and held >= 2 * self.fair_share(now):
            self._shed(store, now)
            return False
        if queue is None:
            queue = self._queues[store] = deque()
            self._order.append(store)
        queue.append(item)
        self._size += 1
        return True

    def fair_share(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        self._forget_quiet(now)
        return max(self.min_share, self.capacity // max(1, len(self._heard)))

    def take(self, limit: int) -> list[T]:
        """Up to `limit` messages, round-robin across stores, FIFO within each store; they
        count as `in_flight` until the caller sets it back (after their commit)."""
        batch: list[T] = []
        while self._order and len(batch) < limit:
            # Each store with messages gets an equal slice of the batch per turn.
            slice_size = max(1, (limit - len(batch)) // len(self._order))
            store = self._order.popleft()
            queue = self._queues[store]
            for _ in range(min(slice_size, len(queue))):
                batch.append(queue.popleft())
            if queue:
                self._order.append(store)
            else:
                del self._queues[store]
        self._size -= len(batch)
        self.in_flight = len(batch)
        return batch

    def clear(self) -> None:
        self._queues.clear()
        self._order.clear()
        self._size = 0

    def report(self) -> None:
        """Log the stores shed since the last report, at most once per REPORT_EVERY_S."""
        now = self._clock()
        if not self._shed_unreported or now - self._reported_at < REPORT_EVERY_S:
            return
        worst = sorted(self._shed_unreported.items(), key=lambda kv: -kv[1])[:10]
        log.warning(
            "fairness: shed %d message(s) of %d store(s) taking more than twice their share of"
            " a full ingest queue (%s); a well-behaved edge sends them again",
            sum(self._shed_unreported.values()),
            len(self._shed_unreported),
            ", ".join(f"{store or '?'}: {count}" for store, count in worst),
        )
        self._shed_unreported.clear()
        self._reported_at = now

    def _shed(self, store: str, now: float) -> None:
        self.shed_total += 1
        if store in self._shed_unreported or len(self._shed_unreported) < 1000:
            self._shed_unreported[store] = self._shed_unreported.get(store, 0) + 1
        if len(self._shed_unreported) == 1 and self._shed_unreported[store] == 1:
            # The first shed of a quiet period is said at once; the rest in the summaries.
            log.warning(
                "fairness: store %r holds %d of a full ingest queue (fair share %d):"
                " shedding its excess",
                store,
                len(self._queues.get(store, ())),
                self.fair_share(now),
            )
            self._reported_at = now

    def _hear(self, store: str, now: float) -> None:
        heard = self._heard
        if store in heard:
            del heard[store]  # re-insert: the dict stays ordered by last message
        elif len(heard) >= MAX_TRACKED_STORES:
            del heard[next(iter(heard))]
        heard[store] = now

    def _forget_quiet(self, now: float) -> None:
        heard = self._heard
        cutoff = now - self.active_window_s
        while heard:
            oldest = next(iter(heard))
            if heard[oldest] >= cutoff:
                break
            del heard[oldest]
