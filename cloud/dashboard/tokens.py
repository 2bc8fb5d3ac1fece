"""Short-lived signed session tokens, so that an EventSource (which cannot send headers)
can open the dashboard's event stream.

The page authenticates once with its API key (`POST /api/v1/dashboard/session`) and gets a
token that names the key's principal (name, role, stores) and an expiry, signed with
HMAC-SHA256. The token only opens a stream; it is no API key and grants nothing else. The
API key itself never appears in a URL (URLs end up in access logs and browser history).

A token opens ONE stream (`redeem`): it carries a random id, and the ids of tokens that
opened a stream are remembered until those tokens expire (`session_ttl_s`, 60 s), so a
token copied from a URL, a log or a proxy opens nothing after its first use. The memory is
bounded (`max_spent`): when that many unexpired tokens have been used, new streams are
refused (429) until the oldest expire, rather than forgetting a used token early. Each
API replica remembers its own: behind several replicas a token opens at most one stream
per replica within its lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from cloud.api.auth import Principal
from cloud.api.errors import ApiError
from cloud.config import Role


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: float  # unix seconds


class SessionSigner:
    def __init__(self, secret: bytes, ttl_s: float, *, max_spent: int = 100_000) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self.max_spent = max_spent
        # token id -> its expiry, oldest first (every token lives ttl_s, so issue order is
        # expiry order)
        self._spent: OrderedDict[str, float] = OrderedDict()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, principal: Principal, *, now: float | None = None) -> IssuedToken:
        expires_at = (time.time() if now is None else now) + self.ttl_s
        claims = {
            "n": principal.name,
            "r": principal.role.value,
            "s": sorted(principal.stores),
            "e": round(expires_at, 3),
            "j": secrets.token_urlsafe(12),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return IssuedToken(f"{body}.{self._mac(body)}", expires_at)

    def verify(self, token: str | None, *, now: float | None = None) -> Principal:
        """The principal a token was issued to; 401 if missing, forged, malformed or expired."""
        return self._check(token, time.time() if now is None else now)[0]

    def redeem(self, token: str | None, *, now: float | None = None) -> Principal:
        """`verify`, and spend the token: a second use answers 401."""
        at = time.time() if now is None else now
        principal, token_id, expires_at = self._check(token, at)
        while self._spent and next(iter(self._spent.values())) <= at:
            self._spent.popitem(last=False)
        if token_id in self._spent:
            raise _unauthorized("session token already used: ask for a new one")
        if len(self._spent) >= self.max_spent:
            wait = max(1, math.ceil(next(iter(self._spent.values())) - at))
            raise ApiError(
                429,
                "too_many_sessions",
                f"{self.max_spent} session tokens opened a stream in the last"
                f" {self.ttl_s:g} s; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self._spent[token_id] = expires_at
        return principal

    @property
    def spent(self) -> int:
        """Used tokens remembered now (until they expire)."""
        return len(self._spent)

    def _check(self, token: str | None, now: float) -> tuple[Principal, str, float]:
        if not token:
            raise _unauthorized("a session token is required (?token=, from POST /session)")
        if not token.isascii():  # a signed token is base64url; anything else is forged
            raise _unauthorized("malformed session token")
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(body)):
            raise _unauthorized("invalid session token")
        try:
            claims = json.loads(_unb64(body))
            principal = Principal(
                str(claims["n"]), Role(claims["r"]), frozenset(str(s) for s in claims["s"])
            )
            expires_at = float(claims["e"])
            token_id = str(claims["j"])
        except (ValueError, KeyError, TypeError):
            raise _unauthorized("malformed session token") from None
        if now >= expires_at:
            raise _unauthorized("session token expired: ask for a new one")
        return principal, token_id, expires_at


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail)
