"""Outbox -> broker: in order, paced, with a bounded window of unacknowledged messages.

The forwarder walks the outbox in storage order (so in seq order per stream), publishes at
most `rate` messages/s with at most `window` waiting for their PUBACK, and deletes a
message only when its PUBACK arrives. It sends only while the uplink is `ready` (connected
and the birth published). After a restart the cursor starts at 0, so the whole backlog is
replayed; across a reconnect paho resends what was in flight itself, so the cursor goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial

from edge.outbox import Outbox
from edge.uplink import PublishRejectedError, Uplink

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(self, outbox: Outbox, uplink: Uplink, *, rate: float, window: int) -> None:
        self._outbox = outbox
        self._uplink = uplink
        self._rate = rate
        self._window = window
        self._burst = max(1.0, min(float(window), rate / 10))
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._cursor = 0
        self._inflight: set[int] = set()
        self._acked: list[int] = []  # PUBACKed, deleted together at the end of the loop turn
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._progress = asyncio.Event()
        self.ready = asyncio.Event()
        self.sent = 0
        self.acknowledged = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            room = self._window - len(self._inflight)
            if room <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._wake.clear()
            batch = self._outbox.pending(self._cursor, min(room, 256))
            if not batch:
                await self._wake.wait()
                continue
            for message in batch:
                if not self.ready.is_set():
                    break
                await self._pace()
                future = self._uplink.publish(message.topic, message.payload, qos=1)
                self._cursor = message.id
                self._inflight.add(message.id)
                self.sent += 1
                future.add_done_callback(partial(self._settled, message.id))

    async def flush(self, within_s: float) -> bool:
        """Wait until the outbox is empty (everything PUBACKed); False on timeout."""
        deadline = time.monotonic() + within_s
        while self._outbox.depth > 0 or self._inflight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            # Woken by every batch of PUBACKs; the timeout also covers drops by expiry.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._progress.wait()
        return True

    async def _pace(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self._rate)
            self._tokens = 1
            self._refilled = time.monotonic()
        self._tokens -= 1

    def _delete_acknowledged(self) -> None:
        # PUBACKs arrive in bursts; one transaction for the burst instead of one per message
        # (with synchronous=FULL that is one fsync instead of dozens).
        acked, self._acked = self._acked, []
        self._outbox.acknowledge(*acked)
        self._progress.set()

    def _settled(self, message_id: int, future: asyncio.Future[None]) -> None:
        self._inflight.discard(message_id)
        self._slot.set()
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            if not self._acked:
                asyncio.get_running_loop().call_soon(self._delete_acknowledged)
            self._acked.append(message_id)
            self.acknowledged += 1
        elif isinstance(error, PublishRejectedError):
            log.error("broker rejected outbox message %d: %s; dropped", message_id, error)
            self._outbox.drop(message_id, "rejected")
        else:
            # Not sent (the uplink stopped or paho refused it): it is still stored, so send
            # it again from here (a duplicate with the same msg_id at worst, never a loss).
            self._cursor = min(self._cursor, message_id - 1)
