"""The scenario file of `storegate sim`: stores, their shelves and stock, and how people behave.

Every section has defaults, so the smallest scenario is `stores: [{id: store-042}]`.
A value that does not fit is refused with the path of its field (`stores.1.shelves: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from protocols.ids import Identifier, NodeId, StoreId
from protocols.mqtt import MqttSettings


class ScenarioError(ValueError):
    """The scenario cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Span(_Strict):
    """A range a value is drawn from, uniformly."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self


class BrokerSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # The embedded broker (iotcore) speaks MQTT 3.1.1 on its default listener.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: SecretStr | None = None

    def settings(self) -> MqttSettings:
        return MqttSettings(
            host=self.host,
            port=self.port,
            protocol=self.protocol,
            username=self.username,
            password=self.password,
            reconnect_min_s=0.5,
            reconnect_max_s=5.0,
        )


class Behaviour(_Strict):
    """What people do, per store. Rates are per real minute / hour of simulation."""

    shoppers_per_minute: float = Field(default=6.0, ge=0, le=6000)
    browse_s: Span = Span(low=5, high=40)
    picks: Span = Field(default=Span(low=1, high=3), description="items a shopper takes")
    buy_p: float = Field(default=0.7, ge=0, le=1, description="a taken item is bought")
    misplace_p: float = Field(
        default=0.3, ge=0, le=1, description="an item not bought is left on a wrong shelf"
    )
    restock_every_s: float = Field(default=45.0, gt=0, description="staff round interval")
    restock_below: float = Field(
        default=0.8, ge=0, le=1, description="refill a shelf under this share of its stock"
    )
    tidy_p: float = Field(
        default=0.5, ge=0, le=1, description="a staff round puts a misplaced item back"
    )
    orders_per_hour: float = Field(default=60.0, ge=0, le=36000, description="online orders")
    pickup_after_s: Span = Span(low=10, high=60)


class LockerSection(_Strict):
    boards: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=8)
    locks_per_board: int = Field(default=8, ge=1, le=16)


class BleSection(_Strict):
    app_shoppers: int = Field(default=4, ge=0, le=1000, description="phones with the app")
    other_phones: int = Field(default=3, ge=0, le=1000, description="phones without it")


class RfReaderSection(_Strict):
    """One fixed reader of a store-sized RFID deployment."""

    id: Identifier
    zone: Literal["sales_floor", "backroom"]
    antennas: int = Field(default=4, ge=1, le=32)


class RfModelSection(_Strict):
    """RF as studies of fixed readers report it (docs/rfid.md, "Simulated reader")."""

    read_rate: Span = Field(
        default=Span(low=0.3, high=0.95), description="per-tag read rates, uniform"
    )
    cross_read_rate: float = Field(default=0.1, ge=0, le=1, description="neighbour antennas")
    fade_every_s: float = Field(default=120.0, ge=0, description="mean good spell per tag")
    fade_mean_s: float = Field(default=3.0, gt=0, description="mean fade (exponential)")
    fade_read_rate: float = Field(default=0.02, ge=0, le=1, description="read rate in a fade")
    boundary_share: float = Field(default=0.05, ge=0, le=1, description="items between two")
    boundary_rssi_drop_db: float = Field(default=2.0, ge=0, le=30)
    carried_per_minute: float = Field(
        default=30.0, ge=0, le=6000, description="items people carry past readers"
    )
    carry_antennas: Span = Field(default=Span(low=2, high=5), description="antennas passed")
    carry_dwell_s: Span = Field(default=Span(low=0.5, high=2.0), description="at each")

    @model_validator(mode="after")
    def _rates(self) -> Self:
        if not 0 < self.read_rate.low <= self.read_rate.high <= 1:
            raise ValueError("read_rate needs 0 < low <= high <= 1")
        return self


class RfidSection(_Strict):
    """A store-sized RFID deployment: several readers of a few antennas each, one shelf per
    antenna, in sales floor and backroom zones, and the RF they see."""

    readers: list[RfReaderSection] = Field(min_length=1, max_length=64)
    items: int = Field(default=20_000, ge=0, le=200_000, description="tagged items in store")
    products_per_antenna: int = Field(default=8, ge=1, le=1000)
    rf: RfModelSection = Field(default_factory=RfModelSection)

    @model_validator(mode="after")
    def _unique_readers(self) -> Self:
        ids = [reader.id for reader in self.readers]
        if len(set(ids)) != len(ids):
            raise ValueError("reader ids must be unique")
        return self

    @property
    def antennas(self) -> int:
        return sum(reader.antennas for reader in self.readers)


class StoreSection(_Strict):
    id: StoreId
    name: str = Field(default="", max_length=200)
    node: NodeId = "pi-1"
    shelves: int = Field(default=4, ge=1, le=32, description="one antenna per shelf")
    products_per_shelf: int = Field(default=4, ge=1, le=100, description="the planogram")
    stock_per_shelf: int = Field(default=20, ge=0, le=5000, description="items when full")
    lockers: LockerSection | None = Field(default_factory=LockerSection)
    ble: BleSection | None = Field(default_factory=BleSection)
    behaviour: Behaviour | None = Field(default=None, description="default: the scenario's")
    rfid: RfidSection | None = Field(
        default=None,
        description="a store-sized deployment (benchmarks, simulators.scenario.rfid_store); "
        "`storegate sim` runs `shelves` on one reader",
    )


class Scenario(_Strict):
    seed: int = 1
    broker: BrokerSection = Field(default_factory=BrokerSection)
    duration_s: float | None = Field(default=None, gt=0, description="stop after; none: Ctrl-C")
    report_interval_s: float = Field(default=2.0, ge=1, le=5, description="RFID report period")
    health_interval_s: float = Field(default=10.0, gt=0)
    truth: Path | None = Field(default=None, description="ground truth JSON lines file")
    behaviour: Behaviour = Field(default_factory=Behaviour)
    stores: list[StoreSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stores(self) -> Self:
        seen: set[str] = set()
        for store in self.stores:
            if store.id in seen:
                raise ValueError(f"store id {store.id!r} is used twice")
            seen.add(store.id)
        return self

    def behaviour_of(self, store: StoreSection) -> Behaviour:
        return store.behaviour or self.behaviour

    def scaled(self, stores: int) -> Scenario:
        """Load mode: `stores` copies of the first store, ids `<id>-0001`, `<id>-0002`, ..."""
        template = self.stores[0]
        copies = [
            template.model_copy(
                update={"id": f"{template.id}-{i:04d}", "name": f"{template.name} #{i}".strip()}
            )
            for i in range(1, stores + 1)
        ]
        return self.model_copy(update={"stores": copies})


def default_scenario() -> Scenario:
    """The demo's three stores."""
    return Scenario(
        stores=[
            StoreSection(id="store-042", name="Lyon Part-Dieu", node="pi-front"),
            StoreSection(id="store-007", name="Paris Rivoli", node="pi-1", shelves=6),
            StoreSection(
                id="store-101",
                name="Bordeaux Sainte-Catherine",
                node="pi-1",
                shelves=3,
                stock_per_shelf=30,
            ),
        ]
    )


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            problems.append(f"{where}: {error['msg']}")
        raise ScenarioError(f"{source}: " + "; ".join(problems)) from None


def load_scenario(path: Path) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from None
    return parse_scenario(data if data is not None else {}, str(path))
