"""The `options:` of a BLE scanner device in the edge config, validated with pydantic."""

from __future__ import annotations

import uuid
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.ble.presence import PresenceParams
from edge.ble.privacy import Allowlist
from edge.ble.scanner import WatchdogTimings
from protocols.ids import BeaconId, Identifier

TRANSITION_GAP_S = 0.1
"""Default: at most 10 early presence messages a second per scanner device, on top of the
flush_s batches; a transition waits at most this long (the 1 s advert -> offer budget)."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScannerOptions(_Options):
    adapter: str = Field(default="hci0", pattern=r"^hci[0-9]{1,2}$")
    zone: Identifier
    id: Identifier | None = Field(default=None, description="defaults to the adapter name")

    @property
    def scanner_id(self) -> str:
        return self.id or self.adapter


class AllowlistOptions(_Options):
    app_uuids: list[uuid.UUID] = Field(
        default_factory=list, description="the loyalty app's iBeacon/AltBeacon proximity UUIDs"
    )
    fixed: dict[str, BeaconId] = Field(
        default_factory=dict,
        description="frame key (e.g. ibeacon:<uuid>:<major>:<minor>, "
        "eddystone-uid:<namespace>:<instance>, altbeacon:<id>) -> published beacon id",
    )

    def build(self) -> Allowlist:
        fixed = {key.lower(): value for key, value in self.fixed.items()}
        return Allowlist.build(self.app_uuids, fixed)


class PresenceOptions(_Options):
    alpha: float = Field(default=0.3, gt=0, le=1)
    enter_dbm: float = -70.0
    enter_samples: int = Field(default=3, ge=1)
    enter_s: float = Field(default=5.0, gt=0)
    switch_db: float = Field(default=6.0, ge=0)
    exit_dbm: float = -78.0
    unseen_min_s: float = Field(default=30.0, gt=0)
    unseen_gap_factor: float = Field(default=3.0, ge=1)
    dwell_s: float = Field(default=20.0, gt=0)
    retention_s: float = Field(default=300.0, gt=0, description="forget a beacon unseen this long")
    max_beacons: int = Field(default=10_000, ge=1)

    def params(self) -> PresenceParams:
        return PresenceParams(**self.model_dump())


class WatchdogOptions(_Options):
    silence_s: float = Field(default=90.0, gt=0, description="no advert this long: restart")
    check_s: float = Field(default=5.0, gt=0)
    start_timeout_s: float = Field(default=20.0, gt=0)

    def timings(self) -> WatchdogTimings:
        return WatchdogTimings(**self.model_dump())


class BleakOptions(_Options):
    """Options of the `bleak` driver. One adapter: `adapter` + `zone`; several adapters on
    one node (USB dongles on cables, one per zone): `scanners`."""

    adapter: str | None = Field(default=None, pattern=r"^hci[0-9]{1,2}$")
    zone: Identifier | None = None
    scanners: list[ScannerOptions] = Field(default_factory=list)
    mode: Literal["active", "passive"] = "active"
    allowlist: AllowlistOptions = Field(default_factory=AllowlistOptions)
    presence: PresenceOptions = Field(default_factory=PresenceOptions)
    watchdog: WatchdogOptions = Field(default_factory=WatchdogOptions)
    flush_s: float = Field(default=1.0, gt=0, description="how often presence events are batched")
    transition_gap_s: float | None = Field(
        default=TRANSITION_GAP_S,
        gt=0,
        le=10,
        description="an enter, zone switch or exit is published at once, in its own early"
        " ble.presence message, at most one such message per this many seconds (transitions"
        " within it share one); null: transitions wait for the flush_s batch like dwells",
    )

    @model_validator(mode="after")
    def _one_scanner_form(self) -> Self:
        if self.scanners and (self.adapter is not None or self.zone is not None):
            raise ValueError("give either adapter + zone, or scanners, not both")
        if not self.scanners and self.zone is None:
            raise ValueError("zone is required (or a scanners list with a zone each)")
        ids = [s.scanner_id for s in self.resolved_scanners()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"scanner ids must be unique: {ids}")
        return self

    def resolved_scanners(self) -> list[ScannerOptions]:
        if self.scanners:
            return list(self.scanners)
        assert self.zone is not None
        return [ScannerOptions(adapter=self.adapter or "hci0", zone=self.zone)]
