"""The catalogue: what a GTIN is called, its size, colour and price, so that people read
products and not 14 digits (staff app, shopper app, dashboard).

Products are imported from CSV (`PUT /api/v1/products`, `storegate catalogue import FILE`);
`GET /api/v1/products?q=` searches them and `GET /api/v1/products/{gtin}/where?store=`
says where a GTIN is. The domain reacts to no message. Config (`domains.catalogue`): see
`CatalogueOptions`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud.catalogue import tables  # noqa: F401  (registers the table on the metadata)
from cloud.catalogue.api import build_router
from cloud.config import CloudSettings
from cloud.domains import Domain
from protocols.ids import Identifier


class CatalogueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_import_rows: int = Field(
        default=100_000, ge=1, description="rows one import takes; the rest are refused"
    )
    max_rejections_listed: int = Field(
        default=200, ge=0, description="refused rows listed in an import's answer (all counted)"
    )
    default_currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="the currency of a price given without one (else such a row is refused)",
    )
    shelf_areas: dict[Identifier, dict[Identifier, str]] = Field(
        default_factory=dict,
        description='store -> shelf -> area ("floor", "backroom", ...), shown by `where`',
    )


class CatalogueDomain(Domain):
    name = "catalogue"

    def __init__(self, options: CatalogueOptions) -> None:
        self.options = options

    def router(self) -> APIRouter:
        o = self.options
        return build_router(
            max_rows=o.max_import_rows,
            max_rejections=o.max_rejections_listed,
            default_currency=o.default_currency,
            shelf_areas=o.shelf_areas,
        )


def parse_options(options: dict[str, Any]) -> CatalogueOptions:
    try:
        return CatalogueOptions.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "options"
        raise ValueError(f"{where}: {problem['msg']}") from None


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> Domain:
    return CatalogueDomain(parse_options(options))
