"""Which stores and nodes may publish: from the config and the registration API."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.config import StoreConfig
from cloud.state import schema
from cloud.state.db import insert_for, writing
from protocols.messages import utc_now


class Registry:
    """In-memory view of the stores and nodes tables (the ingestor checks every message)."""

    def __init__(self) -> None:
        self.stores: set[str] = set()
        self.nodes: set[tuple[str, str]] = set()

    def knows_store(self, store: str) -> bool:
        return store in self.stores

    def knows_node(self, store: str, node: str) -> bool:
        return (store, node) in self.nodes

    async def load(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            stores = (await connection.execute(select(schema.stores.c.store_id))).scalars()
            self.stores = set(stores)
            rows = await connection.execute(select(schema.nodes.c.store_id, schema.nodes.c.node_id))
            self.nodes = {(row.store_id, row.node_id) for row in rows}

    async def register(
        self, engine: AsyncEngine, store: str, nodes: list[str], *, name: str = ""
    ) -> None:
        """Add a store and its nodes (idempotent); existing rows keep their state."""
        async with writing(engine) as connection:
            await _register(connection, store, nodes, name)
        self.stores.add(store)
        self.nodes.update((store, node) for node in nodes)

    async def seed(self, engine: AsyncEngine, stores: list[StoreConfig]) -> None:
        async with writing(engine) as connection:
            for store in stores:
                await _register(connection, store.id, store.nodes, store.name)
        await self.load(engine)


async def _register(connection: AsyncConnection, store: str, nodes: list[str], name: str) -> None:
    now = utc_now()
    statement = insert_for(connection, schema.stores).values(
        store_id=store, name=name, created_at=now
    )
    await connection.execute(statement.on_conflict_do_nothing(index_elements=["store_id"]))
    for node in nodes:
        node_statement = insert_for(connection, schema.nodes).values(
            store_id=store, node_id=node, status="unknown"
        )
        await connection.execute(
            node_statement.on_conflict_do_nothing(index_elements=["store_id", "node_id"])
        )
