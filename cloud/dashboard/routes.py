"""The dashboard's HTTP surface: the page, its static files, a session token for SSE, the
live event stream (authenticated by that token) and stock history for the chart."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from cloud.api.auth import Principal, client_ip, refuse_if_limited
from cloud.api.deps import Cloud, Reader
from cloud.api.errors import ApiError, error_responses
from cloud.api.limits import AuthFailureLimiter
from cloud.api.timestamps import ApiTimestamp, iso_utc
from cloud.bus import Change
from cloud.config import Role
from cloud.dashboard.history import stock_over_time
from cloud.dashboard.tokens import SessionSigner
from cloud.timeseries.reader import HistoryReader, HistoryUnavailable, QueryError
from protocols.ids import IDENTIFIER_PATTERN

STATIC = resources.files("cloud.dashboard") / "static"
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(js|css|html|svg|json)$")
_CONTENT_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "svg": "image/svg+xml",
    "json": "application/manifest+json",  # the apps' web manifests are the only JSON files
}
# The installable apps: /staff/ and /app/, each with its manifest and a service worker whose
# scope is the app's path (a worker controls the pages under the path it is served from).
APPS = {"staff": "staff", "app": "shopper"}
# Everything the page loads comes from this origin; no inline script, no third party.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class SessionOut(BaseModel):
    token: str
    expires_at: ApiTimestamp
    name: str
    role: str
    stores: list[str]


class HistoryOut(BaseModel):
    store: str
    gtin: str
    every_s: float
    times: list[ApiTimestamp]
    total: list[int | None]
    shelves: dict[str, list[int | None]]


def _asset(name: str) -> Response:
    if not _ASSET_NAME.fullmatch(name):
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    resource = STATIC / name
    if not resource.is_file():
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    kind = name.rsplit(".", 1)[1]
    return Response(
        resource.read_bytes(), media_type=_CONTENT_TYPES[kind], headers=_SECURITY_HEADERS
    )


def _app_routes(router: APIRouter, path: str, page: str) -> None:
    async def redirect() -> Response:
        return RedirectResponse(f"/{path}/", status_code=308)

    async def html() -> Response:
        return _asset(f"{page}.html")

    async def manifest() -> Response:
        return _asset(f"{page}-manifest.json")

    async def worker() -> Response:
        return _asset("sw.js")

    router.get(f"/{path}", include_in_schema=False)(redirect)
    router.get(f"/{path}/", include_in_schema=False)(html)
    router.get(f"/{path}/manifest.json", include_in_schema=False)(manifest)
    router.get(f"/{path}/sw.js", include_in_schema=False)(worker)


def visible(principal: Principal, change: Change) -> bool:
    """The same rule as the core `/api/v1/events`: staff see only their stores' changes
    and nothing that belongs to no store."""
    if change.store is None:
        return principal.role is not Role.STAFF
    return principal.may_see(change.store)


def build_router(
    signer: SessionSigner,
    history_reader: Callable[[], HistoryReader | None],
    *,
    stream_max_age_s: float,
) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> Response:
        return _asset("index.html")

    @router.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return _asset(name)

    for path, page in APPS.items():
        _app_routes(router, path, page)

    @router.post("/api/v1/dashboard/session", tags=["dashboard"])
    async def session(principal: Reader) -> SessionOut:
        """A short-lived token that opens `/api/v1/dashboard/events` (EventSource cannot
        send an Authorization header). It carries the key's role and stores, nothing more."""
        issued = signer.issue(principal)
        return SessionOut(
            token=issued.token,
            expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
            name=principal.name,
            role=principal.role.value,
            stores=sorted(principal.stores),
        )

    @router.get(
        "/api/v1/dashboard/events",
        tags=["dashboard"],
        response_model=None,
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **error_responses(401, 403, 429)},
    )
    async def events(
        request: Request, cloud: Cloud, token: Annotated[str | None, Query()] = None
    ) -> EventSourceResponse:
        """The live changes of `/api/v1/events`, filtered the same way, for a session token.
        The token is checked when the stream opens and opens one stream only; a reconnect
        needs a fresh one. The server ends a stream after `stream_max_age_s`, so an open
        page re-authenticates with its key at least that often."""
        limiter: AuthFailureLimiter = request.app.state.auth_limiter
        ip = client_ip(request)
        refuse_if_limited(limiter, ip, None)
        try:
            principal = signer.redeem(token)
        except ApiError as refused:
            if refused.status == 401:
                limiter.failed(ip, None)  # counted per IP, like a wrong API key
            raise
        if principal.role not in (Role.OPS, Role.STAFF):
            raise ApiError(403, "forbidden", f"role {principal.role.value} may not do this")

        async def stream() -> AsyncIterator[dict[str, str]]:
            # Every change goes out as an unnamed SSE event (`message`) with its kind in the
            # body: an EventSource only delivers named events it registered a listener for,
            # and the page must see kinds it does not know yet, too. Subscribed here, so a
            # response that never starts streaming holds no subscription.
            subscription = cloud.bus.subscribe()
            try:
                hello = {"kind": "hello", "role": principal.role.value, "name": principal.name}
                yield {"data": json.dumps(hello)}
                deadline = time.monotonic() + stream_max_age_s
                while True:
                    try:
                        async with asyncio.timeout(deadline - time.monotonic()):
                            change = await subscription.get()
                    except TimeoutError:
                        return  # ends the response; the page comes back with a new token
                    if not visible(principal, change):
                        continue
                    body: dict[str, Any] = {
                        "kind": change.kind,
                        "store": change.store,
                        "at": iso_utc(change.at),
                        "dropped": subscription.dropped,
                        "data": change.data,
                    }
                    yield {"data": json.dumps(body, default=str)}
            except asyncio.CancelledError:
                raise
            finally:
                subscription.close()

        return EventSourceResponse(stream(), ping=15)

    @router.get(
        "/api/v1/dashboard/history",
        tags=["dashboard"],
        responses=error_responses(404, 502, 503),
    )
    async def history(
        principal: Reader,
        cloud: Cloud,
        store: Annotated[str, Query(pattern=IDENTIFIER_PATTERN)],
        gtin: Annotated[str, Query(pattern=r"^[0-9]{14}$")],
        minutes: Annotated[float, Query(gt=0, le=7 * 24 * 60)] = 60,
        points: Annotated[int, Query(ge=2, le=500)] = 120,
    ) -> HistoryOut:
        """Stock of one GTIN in one store over the last `minutes`, in `points` intervals
        (last known count per interval, carried forward)."""
        principal.check_store(store)
        if not cloud.registry.knows_store(store):
            raise ApiError(404, "not_found", f"store {store!r} is not registered")
        reader = history_reader()
        if reader is None:
            raise ApiError(503, "not_ready", "the dashboard domain has not started")
        span = timedelta(minutes=minutes)
        try:
            series = await stock_over_time(reader, store, gtin, datetime.now(UTC), span, points)
        except HistoryUnavailable as exc:
            raise ApiError(503, "history_unavailable", str(exc)) from None
        except QueryError as exc:
            raise ApiError(502, "history_query_failed", str(exc)) from None
        return HistoryOut(
            store=store,
            gtin=gtin,
            every_s=span.total_seconds() / points,
            times=series.times,
            total=series.total,
            shelves=series.shelves,
        )

    return router
