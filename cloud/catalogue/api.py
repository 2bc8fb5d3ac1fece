"""Catalogue endpoints: import from CSV, search, one product, where a GTIN is.

- `PUT /api/v1/products` (ops; `text/csv`): good rows are imported, bad ones come back
  with their line and reason;
- `GET /api/v1/products?q=` (or `?gtins=a,b`), `GET /api/v1/products/{gtin}` (every role);
- `GET /api/v1/products/{gtin}/where?store=` (every role; staff only for their stores):
  the shelves of this store that hold it or should, and the units counted in other stores.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from cloud.api.deps import Cloud, Ops, Shopping
from cloud.api.errors import ApiError, ErrorOut, error_responses
from cloud.catalogue import products
from cloud.catalogue.csvimport import CatalogueFileError, parse_catalogue
from cloud.state.db import writing
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import utc_now

GTIN14 = re.compile(r"^[0-9]{14}$")
GtinPath = Annotated[str, Path(pattern=r"^[0-9]{14}$", description="GTIN-14")]


class ProductOut(BaseModel):
    gtin: str
    name: str
    size: str | None
    colour: str | None
    price: str | None = Field(description='decimal string, e.g. "19.90"; null when unknown')
    currency: str | None
    category: str | None


class RejectionOut(BaseModel):
    line: int
    reason: str


class ImportOut(BaseModel):
    imported: int = Field(description="rows written (created + updated)")
    created: int
    updated: int
    rejected: int = Field(description="rows refused; the first ones are listed in `rejections`")
    rejections: list[RejectionOut]
    ignored_columns: list[str]


class ShelfOut(BaseModel):
    shelf: str
    count: int = Field(description="units counted on this shelf now")
    planned: bool = Field(description="the store's planogram puts this GTIN here")
    area: str | None = Field(description='e.g. "floor" or "backroom", when configured')


class StoreStockOut(BaseModel):
    store: str
    name: str
    on_hand: int


class WhereOut(BaseModel):
    gtin: str
    product: ProductOut | None
    store: str | None
    here: list[ShelfOut] = Field(description="this store's shelves (empty without `store`)")
    elsewhere: list[StoreStockOut] = Field(description="other stores with units on hand")


def build_router(
    *,
    max_rows: int,
    max_rejections: int,
    default_currency: str | None,
    shelf_areas: dict[str, dict[str, str]],
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["catalogue"])

    @router.put(
        "/products",
        responses={
            **error_responses(413, 422),
            415: {"model": ErrorOut, "description": "the body is not text/csv"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        },
    )
    async def import_products(request: Request, _p: Ops, cloud: Cloud) -> ImportOut:
        """Import products from CSV (header `gtin,name,size,colour,price,currency,category`;
        `gtin` and `name` required). Known GTINs are replaced, new ones added; each bad row
        is refused with its line and reason and the others are still imported."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ("text/csv", "text/plain"):
            raise ApiError(415, "unsupported_media_type", "send the catalogue as text/csv")
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ApiError(
                422, "invalid_request", f"the file is not UTF-8 (byte {exc.start})"
            ) from None
        try:
            parsed = await asyncio.to_thread(
                parse_catalogue, text, max_rows=max_rows, default_currency=default_currency
            )
        except CatalogueFileError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        async with writing(cloud.engine) as connection:
            created, updated = await products.upsert(connection, parsed.products, utc_now())
        return ImportOut(
            imported=created + updated,
            created=created,
            updated=updated,
            rejected=len(parsed.rejections),
            rejections=[
                RejectionOut(line=r.line, reason=r.reason)
                for r in parsed.rejections[:max_rejections]
            ],
            ignored_columns=parsed.ignored_columns,
        )

    @router.get("/products")
    async def search_products(
        _p: Shopping,
        cloud: Cloud,
        q: Annotated[
            str | None,
            Query(
                max_length=100, description="words the GTIN, name, category, colour or size contain"
            ),
        ] = None,
        gtins: Annotated[
            str | None,
            Query(
                max_length=1600,
                description="comma-separated GTIN-14s: these products (the apps' name lookup)",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[ProductOut]:
        """Products matching every word of `q` (any case), by name; or, with `gtins`, those
        products (the ones the catalogue knows)."""
        async with cloud.engine.connect() as connection:
            if gtins is not None:
                wanted = [g.strip() for g in gtins.split(",") if g.strip()][:limit]
                bad = [g for g in wanted if not GTIN14.fullmatch(g)]
                if bad:
                    raise ApiError(422, "invalid_request", f"gtins: {bad[0]!r} is not a GTIN-14")
                named = await products.names(connection, wanted)
                found = [named[g] for g in wanted if g in named]
            else:
                found = await products.search(connection, q, limit)
        return [ProductOut(**p) for p in found]

    @router.get("/products/{gtin}", responses=error_responses(404))
    async def get_product(gtin: GtinPath, _p: Shopping, cloud: Cloud) -> ProductOut:
        async with cloud.engine.connect() as connection:
            found = await products.get(connection, gtin)
        if found is None:
            raise ApiError(404, "not_found", f"the catalogue has no product {gtin}")
        return ProductOut(**found)

    @router.get("/products/{gtin}/where", responses=error_responses(404))
    async def where(
        gtin: GtinPath,
        principal: Shopping,
        cloud: Cloud,
        store: Annotated[
            str | None, Query(pattern=IDENTIFIER_PATTERN, description="this store")
        ] = None,
    ) -> WhereOut:
        """Where a GTIN is: the shelves of `store` that hold it (or should, by the
        planogram) with their counts, and the units on hand in every other store. A GTIN
        the catalogue does not know still answers (`product` null) when stock has it."""
        if store is not None:
            principal.check_store(store)
            if not cloud.registry.knows_store(store):
                raise ApiError(404, "not_found", f"store {store!r} is not registered")
        async with cloud.engine.connect() as connection:
            product = await products.get(connection, gtin)
            here = [] if store is None else await products.shelves_here(connection, store, gtin)
            stock = await products.on_hand_by_store(connection, gtin)
            named = await products.store_names(connection)
        areas = shelf_areas.get(store or "", {})
        return WhereOut(
            gtin=gtin,
            product=None if product is None else ProductOut(**product),
            store=store,
            here=[
                ShelfOut(shelf=shelf, count=count, planned=planned, area=areas.get(shelf))
                for shelf, count, planned in here
            ],
            elsewhere=[
                StoreStockOut(store=s, name=named.get(s, ""), on_hand=n)
                for s, n in stock.items()
                if s != store
            ],
        )

    return router
