"""The `domains.inventory` section of the cloud config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

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


SALES_FLOOR, BACKROOM, EXIT = "sales_floor", "backroom", "exit"


class ZoneOptions(BaseModel):
    """Where each shelf (read point) is: the sales floor, the backroom, an exit. A shelf is
    named by its own id or by its reader's id (the edge names shelves `<reader>-a<n>`, so
    `back-1` covers `back-1-a1`...); the most specific entry wins, then the store's own
    entries over the every-store ones."""

    model_config = ConfigDict(extra="forbid")

    default: Identifier = Field(
        default=SALES_FLOOR, description="the zone of a shelf no entry names"
    )
    shelves: dict[Identifier, Identifier] = Field(
        default_factory=dict, description="shelf or reader id -> zone, every store"
    )
    stores: dict[Identifier, dict[Identifier, Identifier]] = Field(
        default_factory=dict, description="per store: shelf or reader id -> zone"
    )

    def zone_of(self, store: str, shelf: str) -> str:
        for entries in (self.stores.get(store, {}), self.shelves):
            if shelf in entries:
                return entries[shelf]
            best = max((p for p in entries if shelf.startswith(p + "-")), key=len, default=None)
            if best is not None:
                return entries[best]
        return self.default


class FloorMinimum(BaseModel):
    """Replenishment by exception: keep at least `minimum` units of the GTIN on the sales
    floor; below it, while the backroom holds some, staff get a task to move them to
    `shelf`."""

    model_config = ConfigDict(extra="forbid")

    gtin: Gtin
    minimum: int = Field(ge=1, le=1_000_000)
    shelf: Identifier = Field(description="the floor shelf the units go to")
    store: Identifier | None = Field(default=None, description="None: every store")


class ReorderOptions(BaseModel):
    """Reorder suggestions: reorder point = demand during the lead time + safety stock."""

    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(
        default=28, ge=1, le=365, description="sales and departures counted over this window"
    )
    lead_time_days: float = Field(default=7, gt=0, le=365, description="supplier lead time")
    lead_times: dict[Identifier, dict[Gtin, Annotated[float, Field(gt=0, le=365)]]] = Field(
        default_factory=dict, description="per store and GTIN, overriding lead_time_days"
    )
    service_z: float = Field(
        default=1.65, ge=0, le=5, description="safety factor z (1.65: a 95 % cycle service)"
    )
    review_days: float = Field(
        default=7, gt=0, le=365, description="an order covers demand up to the next review"
    )

    def lead_time(self, store: str, gtin: str) -> float:
        return self.lead_times.get(store, {}).get(gtin, self.lead_time_days)


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


class LevelWebhookOptions(BaseModel):
    """Inventory-level webhooks (cloud/inventory/webhooks.py): the online channel hears when
    what a store may sell changes."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    secret_env: str = Field(
        min_length=1,
        description="NAME of the env var holding the HMAC-SHA256 key that signs every POST"
        " (X-Storegate-Signature); the key itself is never in a file",
    )
    debounce_s: float = Field(
        default=0.5, ge=0, le=60, description="changes this close go out in one POST"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    levels_per_post: int = Field(default=500, ge=1, le=10_000)
    reconcile_s: float = Field(
        default=300.0,
        gt=0,
        description="how often every level is compared with what was last sent (catches"
        " what no change announced: a replaced snapshot, a failed delivery, a restart)",
    )
    max_pending: int = Field(
        default=100_000,
        ge=1,
        description="changed (store, GTIN) keys waiting; beyond it the next round compares"
        " every level instead",
    )


AlertEvent = Literal["raised", "cleared", "acknowledged"]
EMAIL_PATTERN = r"^[^@\s<>]+@[^@\s<>]+$"


def _raised_only() -> list[AlertEvent]:
    return ["raised"]


class SmtpOptions(BaseModel):
    """The mail server that alert e-mails go through (cloud/inventory/notify.py)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (587), tls (implicit, 465), none (a relay on localhost only)",
    )
    sender: str = Field(pattern=EMAIL_PATTERN, description="the From address")
    username: str | None = None
    password_env: str | None = Field(
        default=None,
        min_length=1,
        description="NAME of the env var holding the SMTP password; never in a file",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class AlertRoute(BaseModel):
    """Which alerts go where: every alert whose kind and store match goes to the route's one
    channel (a signed webhook or e-mail)."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="alert types (low_stock, misplaced, ...); empty: all"
    )
    stores: list[Identifier] = Field(default_factory=list, description="empty: every store")
    events: list[AlertEvent] = Field(default_factory=_raised_only, min_length=1)
    webhook: HttpUrl | None = None
    secret_env: str | None = Field(
        default=None,
        min_length=1,
        description="NAME of the env var holding the webhook's HMAC-SHA256 signing key",
    )
    email: list[Annotated[str, Field(pattern=EMAIL_PATTERN)]] = Field(
        default_factory=list, description="recipients"
    )

    @model_validator(mode="after")
    def _one_channel(self) -> AlertRoute:
        if (self.webhook is None) == (not self.email):
            raise ValueError("a route has exactly one channel: `webhook` or `email`")
        if self.webhook is not None and self.secret_env is None:
            raise ValueError("a webhook route needs `secret_env` (its signing key's env var)")
        return self

    @property
    def channel(self) -> str:
        return "webhook" if self.webhook is not None else "email"

    def matches(self, kind: str, store: str | None, event: str) -> bool:
        return (
            event in self.events
            and (not self.kinds or kind in self.kinds)
            and (not self.stores or store in self.stores)
        )


class AlertNotifyOptions(BaseModel):
    """Alerts reach people: routes per alert kind and store to webhooks and e-mail."""

    model_config = ConfigDict(extra="forbid")

    routes: list[AlertRoute] = Field(default_factory=list)
    smtp: SmtpOptions | None = None
    queue_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="notifications waiting per route; when full the oldest is dropped (logged)",
    )
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="per webhook POST")

    @model_validator(mode="after")
    def _smtp_for_email(self) -> AlertNotifyOptions:
        if self.smtp is None and any(route.email for route in self.routes):
            raise ValueError("an e-mail route needs the `smtp` section")
        return self


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
    webhook: LevelWebhookOptions | None = None
    notifications: AlertNotifyOptions = Field(default_factory=AlertNotifyOptions)
    recent_epcs: int = Field(
        default=5, ge=0, le=100, description="EPCs kept per (shelf, GTIN) for alert details"
    )
    zones: ZoneOptions = Field(default_factory=ZoneOptions)
    floor_minimums: list[FloorMinimum] = Field(default_factory=list)
    reorder: ReorderOptions = Field(default_factory=ReorderOptions)

    def floor_minimum(self, store: str, gtin: str) -> FloorMinimum | None:
        """The store's own entry for the GTIN, else the every-store one."""
        best = None
        for entry in self.floor_minimums:
            if entry.gtin == gtin and entry.store == store:
                return entry
            if entry.gtin == gtin and entry.store is None:
                best = entry
        return best

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
