"""Outbox -> broker: in order, paced, with a bounded window of unacknowledged messages.

The forwarder walks the outbox in storage order (so in seq order per stream), publishes at
most `rate` messages/s with at most `window` waiting for their PUBACK, and sends only while
the uplink is `ready` (connected and the birth published).

A PUBACK only frees a window slot: the broker having a message is not the cloud having it
(a broker restarted without its persistence, or one with nobody subscribed, PUBACKs and
loses it). A message is deleted when the cloud's `committed` mark for its stream reaches
its seq (`confirm`). Until then it is *unconfirmed*, and it is sent again, from the oldest
unconfirmed one and in order:
- after every (re)connect: the uplink forgets the outbox messages paho still held for the
  old connection, so nothing is resent out of order ahead of them;
- when unconfirmed messages get no confirmation for `confirm_timeout_s`; the timeout
  doubles after each such resend (up to `MAX_CONFIRM_TIMEOUT_S`) and resets on progress, so
  a cloud that is down for hours is not sent the whole outbox every half a minute. A birth
  goes first (`on_stall`): the cloud may be waiting for seqs dropped here since the last
  birth, and the birth lists them.
Resends are harmless: the cloud deduplicates on (stream, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial

from edge.outbox import Outbox
from edge.uplink import PublishRejectedError, Uplink

log = logging.getLogger(__name__)

MAX_CONFIRM_TIMEOUT_S = 600.0
# How long a clean shutdown waits, once everything is PUBACKed, for the cloud to confirm:
# not needed for safety (the outbox keeps what is unconfirmed and resends it at the next
# start), only to resend less then.
CONFIRM_GRACE_S = 0.5


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        uplink: Uplink,
        *,
        rate: float,
        window: int,
        confirm_timeout_s: float = 30.0,
        on_stall: Callable[[], object] | None = None,
    ) -> None:
        """`on_stall` runs before a resend on timeout (the runtime publishes a birth: it
        tells the cloud which seqs were dropped since the last one, so it stops waiting for
        them)."""
        self._outbox = outbox
        self._uplink = uplink
        self._rate = rate
        self._window = window
        self._burst = max(1.0, min(float(window), rate / 10))
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._cursor = 0
        self._rewinds = 0
        self._inflight: set[int] = set()
        self._marks: dict[str, int] = {}  # confirmations received, applied at the end of the turn
        self._confirm_timeout_s = confirm_timeout_s
        self._on_stall = on_stall
        self._timeout_s = confirm_timeout_s
        self._progress_at = time.monotonic()
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._progress = asyncio.Event()
        self.ready = asyncio.Event()
        self.sent = 0
        self.acknowledged = 0
        self.confirmed = 0
        self.resends = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def rewind(self, why: str) -> None:
        """Send again from the oldest unconfirmed message, in order."""
        oldest = self._outbox.oldest_id()
        if oldest is not None and oldest <= self._cursor:
            self.resends += 1
            log.info("resending the unconfirmed outbox from message %d: %s", oldest, why)
        self._cursor = 0
        self._rewinds += 1  # a batch being sent stops: the next one starts from the oldest
        self._progress_at = time.monotonic()
        self._wake.set()

    def confirm(self, marks: Mapping[str, int]) -> None:
        """The cloud's committed mark per stream (its latest, retained message included)."""
        positions = self._outbox.stream_positions()
        for stream, seq in marks.items():
            position = positions.get(stream)
            if position is None or seq > position:
                # Above anything we assigned: a mark from before this node's counters were
                # reset (new SD card). Deleting by it would lose messages the cloud never had.
                log.warning(
                    "ignoring the cloud's committed mark %d for %s: our position is %s",
                    seq,
                    stream,
                    position,
                )
                continue
            if not self._marks:
                asyncio.get_running_loop().call_soon(self._delete_confirmed)
            self._marks[stream] = seq  # the latest, not the highest

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
            rewinds = self._rewinds
            for message in batch:
                await self._pace()
                if not self.ready.is_set() or self._rewinds != rewinds:
                    break
                future = self._uplink.publish(message.topic, message.payload, qos=1, resend=False)
                self._cursor = message.id
                self._outbox.sent_through = max(self._outbox.sent_through, message.id)
                self._inflight.add(message.id)
                self.sent += 1
                future.add_done_callback(partial(self._settled, message.id))

    async def watch_confirmations(self) -> None:
        """Resend when sent messages stay unconfirmed for the timeout."""
        check_s = min(1.0, self._confirm_timeout_s / 4)
        while True:
            await asyncio.sleep(check_s)
            oldest = self._outbox.oldest_id()
            now = time.monotonic()
            if oldest is None or oldest > self._cursor or not self.ready.is_set():
                self._progress_at = now  # nothing sent is waiting: the clock starts at a send
                continue
            if now - self._progress_at >= self._timeout_s:
                log.warning(
                    "no commit confirmation from the cloud for %.0f s", now - self._progress_at
                )
                self._timeout_s = min(self._timeout_s * 2, MAX_CONFIRM_TIMEOUT_S)
                if self._on_stall is not None:
                    self._on_stall()
                self.rewind("confirmation timeout")

    async def flush(self, within_s: float) -> bool:
        """Wait until every stored message is sent and PUBACKed, then (briefly) confirmed;
        False when something is still unsent or unacknowledged at the deadline."""
        deadline = time.monotonic() + within_s
        grace_until: float | None = None
        while self._outbox.depth > 0 or self._inflight:
            now = time.monotonic()
            if not self._inflight and self._all_sent():
                grace_until = grace_until or now + CONFIRM_GRACE_S
                if now >= min(grace_until, deadline):
                    return True
            remaining = deadline - now
            if remaining <= 0:
                return False
            self._progress.clear()
            # Woken by every batch of PUBACKs and confirmations; the timeout also covers
            # drops by expiry.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.1)):
                    await self._progress.wait()
        return True

    def _all_sent(self) -> bool:
        return not self._outbox.pending(self._cursor, 1)

    async def _pace(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self._rate)
            self._tokens = 1
            self._refilled = time.monotonic()
        self._tokens -= 1

    def _delete_confirmed(self) -> None:
        # Marks arrive per node every ~200 ms; one transaction for all of a turn's streams
        # (with synchronous=FULL that is one fsync, not one per stream).
        marks, self._marks = self._marks, {}
        deleted = self._outbox.confirm(marks)
        if deleted:
            self.confirmed += deleted
            self._progress_at = time.monotonic()
            self._timeout_s = self._confirm_timeout_s
        self._progress.set()

    def _settled(self, message_id: int, future: asyncio.Future[None]) -> None:
        self._inflight.discard(message_id)
        self._slot.set()
        self._progress.set()
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.acknowledged += 1
        elif isinstance(error, PublishRejectedError):
            log.error("broker rejected outbox message %d: %s; dropped", message_id, error)
            self._outbox.drop(message_id, "rejected")
        # Otherwise not sent (the connection was lost, the uplink stopped): it is still
        # stored, and the rewind at the next connect sends it again, in order.
