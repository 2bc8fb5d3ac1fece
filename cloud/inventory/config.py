"""The `domains.inventory` section of the cloud config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.ids import Gtin, Identifier


class DefaultReorderPoint(BaseModel):
    """A reorder point from the config file; one set through the API for the same
    (store, GTIN, shelf) wins over it."""

    model_config = ConfigDict(extra="forbid")

    gtin: Gtin
    reorder_point: int = Field(ge=0)
    store: Identifier | None = Field(default=None, description="None: every store")
    shelf: Identifier | None = Field(default=None, description="None: the store-wide total")


class AvailabilityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    safety_stock: int = Field(
        default=1,
        ge=0,
        description="units per store the webshop never sells (the ones the shelf may not"
        " find: misplaced, in a basket, miscounted)",
    )
    stores: dict[Identifier, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="per-store safety stock overriding the default"
    )
    max_gtins: int = Field(default=100, ge=1, le=1000, description="GTINs per request")

    def safety_for(self, store: str) -> int:
        return self.stores.get(store, self.safety_stock)


PickupMethod = Literal["buy", "reserve", "ship to store", "not supported"]
PickupSla = Literal[
    "same day", "next day", "2-day", "3-day", "4-day", "5-day", "6-day", "multi-week"
]


class LocalFeedStore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_code: str | None = Field(
        default=None, min_length=1, max_length=64, description="Business Profile store code"
    )
    pickup_method: PickupMethod | None = None
    pickup_sla: PickupSla | None = None


class LocalFeedOptions(BaseModel):
    """Google Merchant Center's local inventory feed (cloud/inventory/feed.py)."""

    model_config = ConfigDict(extra="forbid")

    limited_max: int = Field(
        default=2,
        ge=0,
        description="available units up to which a product is limited_availability (Google:"
        " 1-2 limited, 3+ in stock, 0 out of stock)",
    )
    pickup_method: PickupMethod = "reserve"
    pickup_sla: PickupSla = "same day"
    stores: dict[Identifier, LocalFeedStore] = Field(
        default_factory=dict, description="per store: its Business Profile code, pickup terms"
    )
    product_ids: dict[Gtin, Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=dict,
        description="GTIN -> the product `id` of the Merchant Center product feed (default:"
        " the GTIN itself)",
    )

    def store_code(self, store: str) -> str:
        entry = self.stores.get(store)
        return entry.store_code if entry and entry.store_code else store

    def pickup(self, store: str) -> tuple[str, str | None]:
        entry = self.stores.get(store)
        method = (entry.pickup_method if entry else None) or self.pickup_method
        sla = (entry.pickup_sla if entry else None) or self.pickup_sla
        return method, None if method == "not supported" else sla


class InventoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hysteresis: int = Field(
        default=1,
        ge=0,
        description="a low-stock alert clears only when on hand > reorder point + hysteresis",
    )
    default_reorder_point: int | None = Field(
        default=None,
        ge=0,
        description="for every GTIN of every store without a specific one (None: none)",
    )
    reorder_points: list[DefaultReorderPoint] = Field(default_factory=list)
    availability: AvailabilityOptions = Field(default_factory=AvailabilityOptions)
    local_feed: LocalFeedOptions = Field(default_factory=LocalFeedOptions)
    recent_epcs: int = Field(
        default=5, ge=0, le=100, description="EPCs kept per (shelf, GTIN) for alert details"
    )

    def configured_point(self, store: str, gtin: str, shelf: str | None) -> int | None:
        """The config's reorder point for this key: a store-specific entry beats an
        all-stores entry; the default applies to store-wide points only."""
        best: DefaultReorderPoint | None = None
        for entry in self.reorder_points:
            if entry.gtin != gtin or entry.shelf != shelf:
                continue
            if entry.store == store:
                return entry.reorder_point
            if entry.store is None:
                best = entry
        if best is not None:
            return best.reorder_point
        return self.default_reorder_point if shelf is None else None


def parse_options(options: dict[str, Any]) -> InventoryOptions:
    """Validate the section; a bad option raises ValueError naming it."""
    try:
        return InventoryOptions.model_validate(options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error["loc"]) or "(section)"
            problems.append(f"{where}: {error['msg']}")
        raise ValueError("; ".join(problems)) from None
