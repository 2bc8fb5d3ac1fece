"""Campaigns: what to offer, where, when, to whom, and how often."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from cloud.api.timestamps import ApiTimestamp
from protocols.ids import Gtin, Identifier
from protocols.messages import OfferTrigger

HHMM = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
HOLDOUT_BUCKETS = 10_000


class Schedule(BaseModel):
    """When a campaign may fire: an absolute window, weekdays and daily hours, local time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    starts_at: ApiTimestamp | None = Field(default=None, description="naive means UTC")
    ends_at: ApiTimestamp | None = Field(default=None, description="naive means UTC")
    days: list[int] = Field(
        default_factory=lambda: list(range(7)), description="0 = Monday ... 6 = Sunday"
    )
    hours_from: HHMM = "00:00"
    hours_to: HHMM = "23:59"  # inclusive end of the daily window
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[int]) -> list[int]:
        if not days or any(d < 0 or d > 6 for d in days):
            raise ValueError("days must be a non-empty list of 0 (Monday) .. 6 (Sunday)")
        return sorted(set(days))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {name!r} (an IANA name like Europe/Paris)"
            ) from None
        return name

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-11-23T09:00:00Z)")
        return value

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def local(self, at: datetime) -> datetime:
        return at.astimezone(ZoneInfo(self.timezone))

    def open_at(self, at: datetime) -> bool:
        if self.starts_at is not None and at < self.starts_at:
            return False
        if self.ends_at is not None and at >= self.ends_at:
            return False
        local = self.local(at)
        if local.weekday() not in self.days:
            return False
        start, end = time.fromisoformat(self.hours_from), time.fromisoformat(self.hours_to)
        now = local.time().replace(second=0, microsecond=0)
        if start <= end:
            return start <= now <= end
        return now >= start or now <= end  # a window across midnight, e.g. 22:00-02:00


class CampaignSpec(BaseModel):
    """A campaign as ops define it (`PUT /api/v1/campaigns/{id}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=120)
    body: str = Field(default="", max_length=1_000)
    trigger: OfferTrigger
    zones: list[Identifier] = Field(min_length=1, description="zones it fires in")
    stores: list[Identifier] = Field(default_factory=list, description="empty: every store")
    gtins: list[Gtin] = Field(
        default_factory=list, max_length=100, description="offered products; stock is checked"
    )
    schedule: Schedule = Field(default_factory=Schedule)
    segment: Identifier | None = Field(default=None, description="None: every segment")
    per_day_cap: int = Field(default=1, ge=1, description="per shopper, per local day")
    per_visit_cap: int = Field(default=1, ge=1, description="per shopper, per store visit")
    zone_cooldown_s: float = Field(
        default=600.0, ge=0, description="no offer in a zone this soon after the last one there"
    )
    holdout_pct: float = Field(default=0.0, ge=0, le=100, description="control group share")

    def applies(self, store: str, zone: str, trigger: OfferTrigger) -> bool:
        return (
            trigger is self.trigger
            and zone in self.zones
            and (not self.stores or store in self.stores)
        )


def in_holdout(campaign_id: str, shopper_id: str, pct: float) -> bool:
    """Deterministic: the same shopper is always in (or out of) a campaign's control group."""
    if pct <= 0:
        return False
    digest = hashlib.sha256(f"{campaign_id}\x00{shopper_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS
    return bucket < pct * HOLDOUT_BUCKETS / 100


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
