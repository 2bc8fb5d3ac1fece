"""Live changes: an in-process pub/sub from the ingestor (after commit) to SSE clients.

Each subscriber has a bounded queue. A slow client never slows the ingestor: when its
queue is full the oldest change is dropped and counted (`dropped`), so the client sees the
newest state and knows (from the counter in every event) that it missed some.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.messages import utc_now


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # node_status, inventory, dead_letter
    store: str | None
    data: dict[str, Any]
    at: datetime = field(default_factory=utc_now)


class Subscription:
    def __init__(self, bus: LiveBus, size: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Change] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, change: Change) -> None:
        while True:
            try:
                self._queue.put_nowait(change)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # drop-oldest: the newest state matters most
                self.dropped += 1
                self._bus.dropped_total += 1

    async def get(self) -> Change:
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class LiveBus:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self.dropped_total = 0

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self.queue_size)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, change: Change) -> None:
        """Called from the event loop's thread only."""
        for subscription in list(self._subscribers):
            subscription.offer(change)
