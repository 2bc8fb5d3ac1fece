"""Bounds on what a client can make the API do before it has proven who it is.

- `BodyLimit`: an ASGI middleware, outermost, so it runs before routing, auth and any
  parsing. A declared `Content-Length` over the limit is answered 413 at once, without
  reading a byte of the body; a body without one (chunked) is counted as it arrives and
  answered 413 the moment it crosses the limit. Nothing past the limit is buffered: the
  connection is closed after the 413.
- `RequestSanity`: rejects NUL bytes in the path or query string (400) before they reach a
  handler. PostgreSQL refuses NUL in text and would answer a database error.
- `AuthFailureLimiter`: token buckets of authentication failures per client IP and per
  presented key (by its sha256; the key itself is never kept or logged). An empty bucket
  answers 429 with `Retry-After`, before the key is even checked.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


async def _send_error(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read, so the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over `max_bytes`, decided before anything reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                length = -1
            if length < 0 or len(declared) > 1:
                await _send_error(send, 400, "invalid_request", "bad Content-Length header")
                return
            if length > self.max_bytes:
                await _send_error(send, 413, "body_too_large", self._detail())
                return
        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        await _send_error(send, 413, "body_too_large", self._detail())
                    # To the app the client is gone: it stops reading and its answer is
                    # dropped below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the cut-off body; the client has its 413 already.
            log.debug("request refused at the body limit; the app gave up on it")

    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes (api.max_body_bytes)"


class RequestSanity:
    """400 for a NUL byte in the path or query: no handler or database should see one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"]
            or b"%00" in scope.get("query_string", b"")
            or b"\x00" in scope.get("query_string", b"")
        ):
            await _send_error(send, 400, "invalid_request", "NUL byte in the path or query")
            return
        await self.app(scope, receive, send)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # monotonic time `tokens` was computed


class FailureBuckets:
    """Token buckets keyed by a string, at most `max_tracked` of them.

    Each failure takes a token; a bucket refills one token every `refill_s` up to `burst`.
    A full bucket carries no state, so those are dropped first when the table is full; only
    when every tracked bucket is in use is the least recently failed one dropped (counted
    in `evicted`), which can give that client its burst again early.
    """

    def __init__(
        self, burst: int, refill_s: float, max_tracked: int, clock: Callable[[], float]
    ) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.max_tracked = max_tracked
        self.clock = clock
        self.evicted = 0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _current(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + (now - bucket.at) / self.refill_s)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = self._current(bucket, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill_s

    def fail(self, key: str) -> bool:
        """Take a token for a failure; True if that emptied the bucket."""
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            self._make_room(now)
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = max(0.0, self._current(bucket, now) - 1)
        bucket.at = now
        self._buckets[key] = bucket  # most recent last
        return bucket.tokens < 1

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_tracked:
            return
        for key in [k for k, b in self._buckets.items() if self._current(b, now) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_tracked:
            self._buckets.popitem(last=False)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._buckets)


class AuthFailureLimiter:
    """Authentication failures per client IP and per presented key (see `FailureBuckets`)."""

    def __init__(
        self,
        burst: int,
        refill_s: float,
        max_tracked: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_ip = FailureBuckets(burst, refill_s, max_tracked, clock)
        self.by_key = FailureBuckets(burst, refill_s, max_tracked, clock)

    def retry_after(self, ip: str, key_sha256: str | None) -> int:
        """Whole seconds the client must wait before its credentials are looked at; 0: go."""
        wait = self.by_ip.retry_after(ip)
        if key_sha256 is not None:
            wait = max(wait, self.by_key.retry_after(key_sha256))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, ip: str, key_sha256: str | None) -> None:
        if self.by_ip.fail(ip):
            log.warning("auth failures from %s: rate limited (429 until its bucket refills)", ip)
        if key_sha256 is not None and self.by_key.fail(key_sha256):
            # The hash only, never the key; a prefix is enough to tell keys apart in logs.
            log.warning(
                "auth failures with one unknown key (sha256 %s...): rate limited",
                key_sha256[:8],
            )
