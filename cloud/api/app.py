"""Routes. Reads go straight to the state store; live changes come from the bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text
from sse_starlette.sse import EventSourceResponse

from cloud.api.auth import BearerCredentials, HeaderKey, check_metrics_key
from cloud.api.deps import Ops, Reader
from cloud.api.docs import install_docs
from cloud.api.errors import (
    ApiError,
    declare_error_responses,
    error_response,
    error_responses,
    install_error_handlers,
)
from cloud.api.limits import AuthFailureLimiter, BodyLimit, RequestSanity
from cloud.api.params import MAX_ROW_ID
from cloud.api.timestamps import ApiTimestamp, iso_utc
from cloud.config import Role
from cloud.context import CloudContext
from cloud.state import schema
from protocols.ids import IDENTIFIER_PATTERN


class StoreIn(BaseModel):
    id: str = Field(pattern=IDENTIFIER_PATTERN)
    name: str = Field(default="", max_length=200)
    nodes: list[Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]] = Field(default_factory=list)


class StoreOut(BaseModel):
    id: str
    name: str
    nodes: int


class NodeOut(BaseModel):
    node: str
    status: str
    bd_seq: int | None
    version: str | None
    devices: list[dict[str, Any]] | None
    last_birth_at: ApiTimestamp | None
    last_seen: ApiTimestamp | None
    health: dict[str, Any] | None
    health_at: ApiTimestamp | None


class ShelfItem(BaseModel):
    shelf: str
    gtin: str
    count: int
    node: str
    updated_at: ApiTimestamp


class DeadLetterOut(BaseModel):
    id: int
    topic: str
    reason: str
    detail: str
    payload_excerpt: str
    payload_bytes: int
    store: str | None
    received_at: ApiTimestamp


class ReadyOut(BaseModel):
    status: Literal["ready", "degraded"]
    degraded: list[str] = Field(
        default_factory=list, description="why history is degraded (only with `degraded`)"
    )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


def create_app(cloud: CloudContext, routers: Sequence[APIRouter] = ()) -> FastAPI:
    app = FastAPI(
        title="storegate cloud",
        version="1",
        openapi_url="/openapi.json",
        docs_url=None,  # served below from vendored files, never from a CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.cloud = cloud
    api = cloud.settings.api
    app.state.auth_limiter = AuthFailureLimiter(
        api.auth_failure_burst, api.auth_failure_refill_s, api.auth_failure_tracked
    )
    install_error_handlers(app)
    # The last added runs first: the body limit before anything else looks at the request.
    app.add_middleware(RequestSanity)
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    for router in routers:  # the domains' endpoints (cloud/domains.py)
        app.include_router(router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model=None,
        responses={200: {"model": ReadyOut}, **error_responses(503)},
    )
    async def readyz() -> Any:
        """The state store answers and the broker is connected (else 503). A history outage
        (sink down, spool growing) answers 200 `degraded` with the reasons: the cloud still
        ingests and serves, the points wait in the spool (docs/cloud.md)."""
        problems = []
        try:
            async with cloud.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means not ready; say which
            problems.append(f"database: {type(exc).__name__}")
        if not cloud.broker_connected():
            problems.append("broker: not connected")
        if problems:
            return error_response(503, "not_ready", "; ".join(problems))
        if cloud.history_problems is not None:
            degraded = await asyncio.to_thread(cloud.history_problems)
            if degraded:
                return {"status": "degraded", "degraded": [f"history: {d}" for d in degraded]}
        return {"status": "ready"}

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}},
            **error_responses(401, 429),
        },
    )
    async def metrics(
        request: Request, _bearer: BearerCredentials = None, _header: HeaderKey = None
    ) -> Response:
        """Prometheus metrics; with `api.metrics_key` set, only for that key (401 without it,
        429 after too many failed tries)."""
        if api.metrics_key is not None:
            check_metrics_key(request, app.state.auth_limiter, api.metrics_key)
        # In a thread: the history collector reads the spool's SQLite file.
        body = await asyncio.to_thread(generate_latest, cloud.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/stores", tags=["stores"])
    async def list_stores(principal: Reader) -> list[StoreOut]:
        s, n = schema.stores, schema.nodes
        query = (
            select(s.c.store_id, s.c.name, func.count(n.c.node_id).label("nodes"))
            .select_from(s.outerjoin(n, n.c.store_id == s.c.store_id))
            .group_by(s.c.store_id, s.c.name)
            .order_by(s.c.store_id)
        )
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            StoreOut(id=row.store_id, name=row.name, nodes=row.nodes)
            for row in rows
            if principal.may_see(row.store_id)
        ]

    @app.post("/api/v1/stores", tags=["stores"], status_code=201)
    async def register_store(body: StoreIn, _principal: Ops) -> StoreOut:
        """Register a store and its nodes; messages from unregistered ones are rejected."""
        await cloud.registry.register(cloud.engine, body.id, body.nodes, name=body.name)
        return StoreOut(id=body.id, name=body.name, nodes=len(body.nodes))

    @app.get("/api/v1/stores/{store}/nodes", tags=["stores"])
    async def store_nodes(store: str, principal: Reader) -> list[NodeOut]:
        principal.check_store(store)
        _known(cloud, store)
        n = schema.nodes
        async with cloud.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(n).where(n.c.store_id == store).order_by(n.c.node_id)
                )
            ).all()
        return [
            NodeOut(
                node=row.node_id,
                status=row.status,
                bd_seq=row.bd_seq,
                version=row.version,
                devices=row.devices,
                last_birth_at=row.last_birth_at,
                last_seen=row.last_seen,
                health=row.health,
                health_at=row.health_at,
            )
            for row in rows
        ]

    @app.get("/api/v1/stores/{store}/inventory", tags=["inventory"])
    async def store_inventory(
        store: str,
        principal: Reader,
        shelf: Annotated[str | None, Query(description="only this shelf")] = None,
        gtin: Annotated[str | None, Query(description="only this GTIN")] = None,
    ) -> list[ShelfItem]:
        principal.check_store(store)
        _known(cloud, store)
        t = schema.inventory
        query = select(t).where(t.c.store_id == store).order_by(t.c.shelf, t.c.gtin)
        if shelf is not None:
            query = query.where(t.c.shelf == shelf)
        if gtin is not None:
            query = query.where(t.c.gtin == gtin)
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            ShelfItem(
                shelf=row.shelf,
                gtin=row.gtin,
                count=row._mapping["count"],
                node=row.node_id,
                updated_at=row.updated_at,
            )
            for row in rows
        ]

    @app.get("/api/v1/dead-letters", tags=["ops"])
    async def dead_letters(
        principal: Reader,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_ROW_ID, description="id to page back from")
        ] = None,
        reason: Annotated[str | None, Query()] = None,
    ) -> DeadLetterPage:
        """Rejected messages, newest first. Staff see only their stores' messages."""
        t = schema.dead_letters
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(t.c.id < before)
        if reason is not None:
            query = query.where(t.c.reason == reason)
        if principal.role is Role.STAFF:
            query = query.where(t.c.store_id.in_(sorted(principal.stores)))
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        items = [
            DeadLetterOut(
                id=row.id,
                topic=row.topic,
                reason=row.reason,
                detail=row.detail,
                payload_excerpt=row.payload_excerpt,
                payload_bytes=row.payload_bytes,
                store=row.store_id,
                received_at=row.received_at,
            )
            for row in rows
        ]
        next_before = items[-1].id if len(items) == limit else None
        return DeadLetterPage(items=items, next_before=next_before)

    @app.get(
        "/api/v1/events",
        tags=["live"],
        response_model=None,
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(request: Request, principal: Reader) -> EventSourceResponse:
        """Server-sent events: node_status, inventory, inventory_replaced, dead_letter."""
        subscription = cloud.bus.subscribe()

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                yield {"event": "hello", "data": json.dumps({"role": principal.role.value})}
                while True:
                    change = await subscription.get()
                    if change.store is not None and not principal.may_see(change.store):
                        continue
                    if change.store is None and principal.role is Role.STAFF:
                        continue
                    body = {
                        "store": change.store,
                        "at": iso_utc(change.at),
                        "dropped": subscription.dropped,
                        **change.data,
                    }
                    yield {"event": change.kind, "data": json.dumps(body, default=str)}
            except asyncio.CancelledError:
                raise
            finally:
                subscription.close()

        return EventSourceResponse(stream(), ping=15)

    declare_error_responses(app, routers)
    return app


def _known(cloud: CloudContext, store: str) -> None:
    if not cloud.registry.knows_store(store):
        raise ApiError(404, "not_found", f"store {store!r} is not registered")
