"""The edge node's config file: who it is, where the broker is, the outbox, the devices.

One YAML file per store node (see examples/edge.yaml); any value can be overridden from the
environment with the `STOREGATE_EDGE_` prefix and `__` for nesting, e.g.
`STOREGATE_EDGE_MQTT__HOST=broker.example`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from edge.drivers.base import DeviceConfig, Driver
from edge.drivers.registry import DriverLookupError, driver_spec
from edge.rfid.shelf_reader import share_tag_claims
from protocols.ids import NodeId, StoreId
from protocols.mqtt import MqttSettings
from protocols.settings import ConfigError, FileSettings, load_settings

DEFAULT_STATE_DIR = Path("/var/lib/storegate-edge")  # systemd StateDirectory=storegate-edge


class OutboxSettings(BaseModel):
    """The durable outbox: where it lives, how big it may grow, how it replays."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(default=DEFAULT_STATE_DIR / "outbox.db", description="SQLite file")
    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=64 * 1024, description="payload bytes kept while offline"
    )
    max_age_s: float = Field(
        default=7 * 86400, gt=0, description="older messages are dropped (reason: expired)"
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: survives a crash, a power cut may lose the last ~1 s of commits;"
        " full: fsync on every commit, survives a power cut, slower",
    )
    replay_rate: float = Field(default=500.0, gt=0, description="max messages/s sent")
    inflight: int = Field(default=64, ge=1, le=65535, description="unacknowledged at once")
    confirm_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="sent messages the cloud has not confirmed for this long are sent again"
        " (the timeout doubles on each resend, up to 10 min, and resets on progress)",
    )


class EdgeSettings(FileSettings):
    model_config = SettingsConfigDict(
        env_prefix="STOREGATE_EDGE_", env_nested_delimiter="__", extra="forbid"
    )

    store: StoreId
    node: NodeId
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    health_interval_s: float = Field(default=30.0, gt=0, description="heartbeat period")
    shutdown_flush_s: float = Field(
        default=5.0, ge=0, description="how long a clean shutdown waits for the outbox"
    )
    devices: list[DeviceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_devices(self) -> EdgeSettings:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is used twice")
            seen.add(device.id)
        return self

    def client_id(self) -> str:
        return f"storegate-edge-{self.store}-{self.node}"


_OPTION_PREFIX = re.compile(r"^[A-Za-z_][\w.]*:")


def create_drivers(settings: EdgeSettings, source: str = "config") -> dict[str, Driver]:
    """Create every configured driver, or raise ConfigError naming `devices.N....`."""
    drivers: dict[str, Driver] = {}
    for index, device in enumerate(settings.devices):
        where = f"devices.{index}"
        try:
            spec = driver_spec(device.driver)
        except DriverLookupError as exc:
            raise ConfigError(f"invalid config ({source}):\n  {where}.driver: {exc}") from None
        if spec.kind is not device.kind:
            raise ConfigError(
                f"invalid config ({source}):\n  {where}.kind: driver {device.driver!r} is for"
                f" {spec.kind}, not {device.kind}"
            )
        try:
            driver = spec.factory(device)
            driver.use_state_dir(settings.outbox.path.parent)
            drivers[device.id] = driver
        except ValueError as exc:
            # Factories name the bad option ("rate_hz: must be > 0"); put it under its path.
            text = str(exc)
            joiner = "." if _OPTION_PREFIX.match(text) else ": "
            raise ConfigError(
                f"invalid config ({source}):\n  {where}.options{joiner}{text}"
            ) from None
    share_tag_claims(drivers.values())
    return drivers


def load_edge_settings(path: str | Path | None) -> EdgeSettings:
    return load_settings(EdgeSettings, path)
