"""The state store and the batch applier on a real database, without a broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from cloud.config import IngestSettings
from cloud.domains import Domain
from cloud.ingest.apply import BatchOutcome, Incoming, StateApplier
from cloud.ingest.registry import Registry
from cloud.metrics import CloudMetrics
from cloud.state import schema
from cloud.state.db import create_engine, migrate
from protocols.messages import Message
from tests.cloud.streams import wire


class RecordingHistory:
    """Stands in for the time-series spool: records what would be spooled, in order."""

    def __init__(self) -> None:
        self.spooled: list[str] = []
        self.full = False

    def lines(self, message: Message) -> list[str]:
        return [f"{message.stream}:{message.seq}"]

    async def append(self, points: Sequence[str]) -> None:
        from cloud.ingest.history import HistoryFullError

        if self.full:
            raise HistoryFullError("test spool is full")
        self.spooled.extend(points)


class StateHarness:
    def __init__(
        self,
        url: str,
        stores: dict[str, list[str]],
        *,
        domains: Sequence[Domain] = (),
        **ingest: Any,
    ) -> None:
        self.engine = create_engine(url)
        self.registry = Registry()
        self.metrics = CloudMetrics()
        self.history = RecordingHistory()
        self.stores = stores
        self.applier = StateApplier(
            self.engine,
            self.registry,
            self.history,
            self.metrics,
            IngestSettings(**ingest),
            domains=domains,
        )
        self._mid = 0

    async def start(self) -> None:
        await migrate(self.engine)
        for store, nodes in self.stores.items():
            await self.registry.register(self.engine, store, nodes)

    async def close(self) -> None:
        await self.engine.dispose()

    async def feed(self, *items: Message | tuple[str, bytes]) -> BatchOutcome:
        batch = []
        for item in items:
            topic, payload = wire(item) if isinstance(item, Message) else item
            self._mid += 1
            batch.append(Incoming(topic, payload, self._mid, 1))
        return await self.applier.apply(batch)

    async def inventory(self, store: str) -> dict[tuple[str, str], int]:
        t = schema.inventory
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(t).where(t.c.store_id == store))).all()
        return {(row.shelf, row.gtin): row._mapping["count"] for row in rows}

    async def node(self, store: str, node: str) -> Any:
        t = schema.nodes
        async with self.engine.connect() as connection:
            return (
                await connection.execute(
                    select(t).where(t.c.store_id == store, t.c.node_id == node)
                )
            ).one()

    async def rows(self, table: Any) -> list[Any]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(select(table))).all())
