"""The bus master: one request on the RS-485 wire at a time, with timeouts and retries.

RS-485 is half duplex and every board on it shares the pair, so requests are serialized by
one asyncio lock per bus. A background task reads the line, parses frames and queues them;
a request first drops frames nobody asked for (late replies of a slow board), then writes
and waits for the reply of the board it addressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from protocols import cu16

from .transport import Streams

log = logging.getLogger(__name__)

# Frames waiting to be matched to a request. A healthy bus holds at most one; more means
# late replies piling up, and the oldest is dropped first (counted in `stale_frames`).
_REPLY_QUEUE = 32


class BoardSilentError(Exception):
    """A board did not answer (after the retries)."""

    def __init__(self, board: int, attempts: int) -> None:
        super().__init__(f"board {board} did not answer {attempts} request(s)")
        self.board = board


class BusClosedError(Exception):
    """The line itself is gone (serial adapter unplugged, TCP bridge closed)."""


@dataclass(slots=True)
class BusStats:
    requests: int = 0
    timeouts: int = 0
    retries: int = 0
    stale_frames: int = 0
    last_latency_s: float = 0.0
    max_latency_s: float = 0.0
    latency_sum_s: float = 0.0
    answered: int = 0


class BusMaster:
    def __init__(
        self,
        streams: Streams,
        *,
        timeout_s: float = 0.25,
        retries: int = 2,
        unlock_answers: bool = True,
    ) -> None:
        self._reader, self._writer = streams
        self.timeout_s = timeout_s
        self.retries = retries
        self.unlock_answers = unlock_answers
        self.parser = cu16.FrameParser()
        self.stats = BusStats()
        self._lock = asyncio.Lock()
        self._replies: asyncio.Queue[cu16.StateReply] = asyncio.Queue(_REPLY_QUEUE)
        self._closed: str | None = None
        self._read_task = asyncio.create_task(self._read_loop(), name="cu16-bus-reader")

    async def _read_loop(self) -> None:
        try:
            while data := await self._reader.read(256):
                for frame in self.parser.feed(data):
                    if isinstance(frame, cu16.StateReply):
                        self._queue(frame)
                    # A CommandFrame is our own echo (some adapters echo TX): ignore it.
            self._closed = "the line closed (EOF)"
        except (OSError, ConnectionError) as exc:
            self._closed = f"the line failed: {exc}"
        except Exception as exc:  # pyserial's SerialException is not an OSError
            self._closed = f"the line failed: {exc}"

    def _queue(self, frame: cu16.StateReply) -> None:
        if self._replies.full():
            self._replies.get_nowait()
            self.stats.stale_frames += 1
        self._replies.put_nowait(frame)

    def _drop_stale(self) -> None:
        while not self._replies.empty():
            self._replies.get_nowait()
            self.stats.stale_frames += 1

    def _check_open(self) -> None:
        if self._closed is not None or self._read_task.done():
            raise BusClosedError(self._closed or "the bus reader stopped")

    async def read_state(self, board: int) -> cu16.StateReply:
        reply = await self._request(board, cu16.encode_read_state(board), expect_reply=True)
        assert reply is not None
        return reply

    async def unlock(self, board: int, lock: int) -> cu16.StateReply | None:
        """Unlock one lock. With `unlock_answers` the board's state reply confirms the
        command (retried when missing); otherwise the next poll shows the door."""
        return await self._request(
            board, cu16.encode_unlock(board, lock), expect_reply=self.unlock_answers
        )

    async def _request(
        self, board: int, frame: bytes, *, expect_reply: bool
    ) -> cu16.StateReply | None:
        async with self._lock:
            attempts = self.retries + 1 if expect_reply else 1
            for attempt in range(attempts):
                self._check_open()
                self._drop_stale()
                if attempt:
                    self.stats.retries += 1
                self.stats.requests += 1
                started = time.monotonic()
                try:
                    self._writer.write(frame)
                    await self._writer.drain()
                except (OSError, ConnectionError) as exc:
                    raise BusClosedError(f"write failed: {exc}") from exc
                if not expect_reply:
                    return None
                reply = await self._await_reply(board, started + self.timeout_s)
                if reply is not None:
                    self._record_latency(time.monotonic() - started)
                    return reply
                self.stats.timeouts += 1
                self.parser.reset()  # a half-received frame will not be completed now
            self._check_open()
            raise BoardSilentError(board, attempts)

    async def _await_reply(self, board: int, deadline: float) -> cu16.StateReply | None:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    reply = await self._replies.get()
            except TimeoutError:
                return None
            if reply.board == board:
                return reply
            self.stats.stale_frames += 1  # another board's late answer
        return None

    def _record_latency(self, latency: float) -> None:
        s = self.stats
        s.answered += 1
        s.last_latency_s = latency
        s.max_latency_s = max(s.max_latency_s, latency)
        s.latency_sum_s += latency

    async def close(self) -> None:
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
