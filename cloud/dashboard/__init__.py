"""The live ops dashboard: a single page (no build step, no CDN) served by the cloud.

The domain serves the page and its static files, hands the page a short-lived session token
for its event stream (see `tokens.py`), relays the cloud's live changes to it, and answers
stock-history questions for its chart. It also turns heartbeats into `node_health` live
changes, so node health (outbox depth, driver states) updates without polling.
It also serves the staff app (`/staff/`) and the shopper app (`/app/`), the store lists
behind them and a shopper's own live stream (`apps.py`, docs/apps.md). It has no tables.
Config (`domains.dashboard`): see `DashboardOptions`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import partial
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cloud.api.timestamps import iso_utc
from cloud.config import CloudSettings
from cloud.dashboard.apps import build_apps_router
from cloud.dashboard.history import open_reader
from cloud.dashboard.routes import build_router
from cloud.dashboard.tokens import SessionSigner
from cloud.domains import Domain, DomainContext, DomainTx
from cloud.timeseries.reader import HistoryReader
from protocols.messages import Health, Message


class DashboardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_ttl_s: float = Field(
        default=60.0, gt=0, le=3600, description="how long a token may open the event stream"
    )
    stream_max_age_s: float = Field(
        default=3600.0,
        gt=0,
        description="the server ends an event stream after this long; the page then asks"
        " for a new token with its key (so a revoked key stops seeing changes)",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for session tokens (>= 16 chars); set it when several API"
        " replicas sit behind one address. Default: random per process.",
    )


def health_change(message: Health) -> dict[str, Any]:
    """What the dashboard shows of a heartbeat (never anything identifying a shopper)."""
    return {
        "node": message.node,
        "health_at": iso_utc(message.event_time),
        "version": message.version,
        "uptime_s": message.uptime_s,
        "cpu_percent": message.cpu_percent,
        "outbox": message.outbox.model_dump(mode="json"),
        "drivers": [
            driver.model_dump(mode="json", include={"device", "kind", "state", "events_per_s"})
            for driver in message.drivers
        ],
    }


class DashboardDomain(Domain):
    name = "dashboard"

    def __init__(self, options: DashboardOptions) -> None:
        secret = (
            options.session_secret.get_secret_value().encode()
            if options.session_secret is not None
            else secrets.token_bytes(32)
        )
        self.signer = SessionSigner(secret, options.session_ttl_s)
        # The shopper streams' tokens are signed with a key of their own, so neither kind of
        # token opens the other's stream.
        app_secret = hmac.new(secret, b"storegate shopper app stream", hashlib.sha256).digest()
        self.app_signer = SessionSigner(app_secret, options.session_ttl_s)
        self.options = options
        self._reader: HistoryReader | None = None

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if isinstance(message, Health):
            # A live view needs the node's newest heartbeat, not each one of a backlog.
            key = (message.store, message.node)
            tx.change_latest("node_health", message.store, key, partial(health_change, message))

    def router(self) -> APIRouter:
        router = build_router(
            self.signer,
            lambda: self._reader,
            stream_max_age_s=self.options.stream_max_age_s,
        )
        # The routes themselves, not an included router: the app's OpenAPI error statuses
        # (cloud/api/errors.py) are declared from the routes each domain router lists.
        apps = build_apps_router(self.app_signer, stream_max_age_s=self.options.stream_max_age_s)
        router.routes.extend(apps.routes)
        return router

    async def start(self, context: DomainContext) -> None:
        self._reader = open_reader(context.settings, context.engine)

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> Domain:
    try:
        parsed = DashboardOptions.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "options"
        raise ValueError(f"{where}: {problem['msg']}") from None
    secret = parsed.session_secret
    if secret is not None and len(secret.get_secret_value()) < 16:
        raise ValueError("session_secret: must be at least 16 characters")
    return DashboardDomain(parsed)
