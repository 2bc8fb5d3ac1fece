"""Short-lived signed session tokens, so that an EventSource (which cannot send headers)
can open the dashboard's event stream.

The page authenticates once with its API key (`POST /api/v1/dashboard/session`) and gets a
token that names the key's principal (name, role, stores) and an expiry, signed with
HMAC-SHA256. The token only opens a stream; it is no API key and grants nothing else. The
API key itself never appears in a URL (URLs end up in access logs and browser history).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
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
    def __init__(self, secret: bytes, ttl_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, principal: Principal, *, now: float | None = None) -> IssuedToken:
        expires_at = (time.time() if now is None else now) + self.ttl_s
        claims = {
            "n": principal.name,
            "r": principal.role.value,
            "s": sorted(principal.stores),
            "e": round(expires_at, 3),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return IssuedToken(f"{body}.{self._mac(body)}", expires_at)

    def verify(self, token: str | None, *, now: float | None = None) -> Principal:
        """The principal a token was issued to; 401 if missing, forged, malformed or expired."""
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
        except (ValueError, KeyError, TypeError):
            raise _unauthorized("malformed session token") from None
        if (time.time() if now is None else now) >= expires_at:
            raise _unauthorized("session token expired: ask for a new one")
        return principal


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail)
