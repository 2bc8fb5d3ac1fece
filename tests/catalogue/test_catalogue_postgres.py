"""The catalogue's queries on PostgreSQL (the API tests run on SQLite): the migration, an
upsert that creates then updates, and a search whose LIKE wildcards are escaped."""

from __future__ import annotations

from decimal import Decimal

from cloud.catalogue import products
from cloud.catalogue.csvimport import Product
from cloud.state.db import create_engine, migrate
from protocols.messages import utc_now
from tests.cloud.conftest import PostgresServer


def _product(gtin: str, name: str, price: str) -> Product:
    return Product(gtin, name, "M", "white", Decimal(price), "EUR", "Tops")


async def test_upsert_and_search_on_postgresql(postgres_server: PostgresServer) -> None:
    engine = create_engine(postgres_server.create_database())
    try:
        await migrate(engine)
        async with engine.begin() as connection:
            first = [
                _product("00614141011001", "Linen shirt", "39.90"),
                _product("00614141011018", "100% cotton_tee", "9.5"),
            ]
            assert await products.upsert(connection, first, utc_now()) == (2, 0)
            again = [
                _product("00614141011001", "Linen shirt", "35"),
                _product("00614141011025", "Sweater", "70"),
            ]
            assert await products.upsert(connection, again, utc_now()) == (1, 1)
        async with engine.connect() as connection:
            assert [p["name"] for p in await products.search(connection, "%", 10)] == [
                "100% cotton_tee"
            ]
            assert [p["name"] for p in await products.search(connection, "n_t", 10)] == [
                "100% cotton_tee"
            ]
            assert [p["name"] for p in await products.search(connection, "LINEN", 10)] == [
                "Linen shirt"
            ]
            shirt = await products.get(connection, "00614141011001")
            assert shirt is not None
            assert shirt["price"] == "35.00"
    finally:
        await engine.dispose()
