"""API-key auth: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Keys are configured as sha256 hashes. The presented key is hashed and compared with every
configured hash using `hmac.compare_digest`, so neither the comparison nor the loop ends
early on a partial match.

Failed attempts are rate limited per client IP and per presented key
(`cloud/api/limits.py`): once a bucket is empty the caller gets 429 with `Retry-After`
before its key is looked at.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from cloud.api.errors import ApiError
from cloud.api.limits import AuthFailureLimiter
from cloud.config import ApiKey, Role


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    stores: frozenset[str]  # staff: the stores it may see; other roles: empty (all)

    def may_see(self, store: str) -> bool:
        return self.role is not Role.STAFF or store in self.stores

    def check_store(self, store: str) -> None:
        if not self.may_see(store):
            raise ApiError(403, "forbidden", f"key {self.name!r} is not allowed store {store!r}")


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def authenticate(keys: list[ApiKey], key: str | None) -> Principal:
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key> or X-API-Key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    match: ApiKey | None = None
    for candidate in keys:
        if hmac.compare_digest(digest, candidate.sha256):
            match = candidate
    if match is None:
        raise ApiError(
            401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return Principal(match.name, match.role, frozenset(match.stores))


def client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def refuse_if_limited(limiter: AuthFailureLimiter, ip: str, key_sha256: str | None) -> None:
    wait = limiter.retry_after(ip, key_sha256)
    if wait:
        raise ApiError(
            429,
            "too_many_auth_failures",
            f"too many failed authentications; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


# Declared in the OpenAPI document (two alternative schemes) so that /docs can send a key.
# auto_error=False: the checks below give the API's own error shape and rate limits.
BEARER_SCHEME = HTTPBearer(
    auto_error=False, scheme_name="BearerKey", description="Authorization: Bearer <API key>"
)
HEADER_SCHEME = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader", description="the API key"
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)]
HeaderKey = Annotated[str | None, Security(HEADER_SCHEME)]


class RoleRequirement:
    """A FastAPI dependency: the caller's principal, if its role is one of `roles`.

    A class rather than a closure so that the OpenAPI document can tell which routes need a
    key (and so may answer 401, 403 and 429): see `cloud/api/errors.py`."""

    def __init__(self, roles: tuple[Role, ...]) -> None:
        self.roles = roles

    async def __call__(
        self, request: Request, _bearer: BearerCredentials = None, _header: HeaderKey = None
    ) -> Principal:
        keys: list[ApiKey] = request.app.state.cloud.settings.api.keys
        limiter: AuthFailureLimiter = request.app.state.auth_limiter
        key = presented_key(request)
        ip = client_ip(request)
        digest = None if key is None else hashlib.sha256(key.encode()).hexdigest()
        refuse_if_limited(limiter, ip, digest)
        try:
            principal = authenticate(keys, key)
        except ApiError:
            limiter.failed(ip, digest)
            raise
        if principal.role not in self.roles:
            raise ApiError(
                403,
                "forbidden",
                f"role {principal.role.value} may not do this (needs"
                f" {' or '.join(r.value for r in self.roles)})",
            )
        return principal


def require(*roles: Role) -> RoleRequirement:
    """A FastAPI dependency: the caller's principal, if its role is one of `roles`."""
    return RoleRequirement(roles)


def check_metrics_key(request: Request, limiter: AuthFailureLimiter, expected: SecretStr) -> None:
    """/metrics with `api.metrics_key` set: that key (Bearer or X-API-Key), else 401."""
    key = presented_key(request)
    ip = client_ip(request)
    digest = None if key is None else hashlib.sha256(key.encode()).hexdigest()
    refuse_if_limited(limiter, ip, digest)
    wanted = hashlib.sha256(expected.get_secret_value().encode()).hexdigest()
    if digest is None or not hmac.compare_digest(digest, wanted):
        limiter.failed(ip, digest)
        raise ApiError(
            401,
            "unauthorized",
            "/metrics needs the metrics key (api.metrics_key): Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
