"""The driver interface: what a device driver gives the runtime and what it gets back.

A driver owns one device (an RFID reader, a locker bank, a BLE scanner, or a simulated
twin). The runtime supervises `run()`: it restarts it with backoff when it raises, and a
driver that keeps failing never takes the daemon down. Drivers never talk MQTT: they emit
message bodies through their `DriverContext`, and the runtime fills in the envelope
(store, node, stream sequence, message id, times), persists the message in the outbox and
publishes it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from protocols.ids import Identifier
from protocols.messages import (
    Command,
    CompartmentStatus,
    DeviceInfo,
    DeviceKind,
    DriverState,
    Message,
    ShelfCount,
    ZoneOccupancy,
)

M = TypeVar("M", bound=Message)


class Priority(IntEnum):
    """What the outbox drops first when it is full: the lowest priority, oldest first."""

    SIGHTING = 0  # raw-ish presence updates; the next one supersedes them
    EVENT = 1  # item / compartment / zone events
    SNAPSHOT = 2  # full state; rebuilds the cloud after drops
    CONTROL = 3  # command acks, lifecycle


class DriverContext(Protocol):
    """What the runtime hands to a running driver."""

    @property
    def store(self) -> str: ...

    @property
    def node(self) -> str: ...

    def emit(
        self, message_type: type[M], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> M:
        """Persist one message of `message_type` on the driver's stream, then queue it for
        publishing. `fields` are the message body (e.g. `reader=..., items=[...]`); the
        runtime adds the envelope. Returns the message as persisted. Synchronous: it returns
        once the message is in the outbox."""
        ...

    def set_state(self, state: DriverState, error: str | None = None) -> None:
        """Report the device's state (e.g. DEGRADED with the reason); shown in health."""
        ...


@dataclass(slots=True)
class DriverSnapshot:
    """A driver's share of the birth: the full current state of its device."""

    shelves: list[ShelfCount] = field(default_factory=list)
    compartments: list[CompartmentStatus] = field(default_factory=list)
    zones: list[ZoneOccupancy] = field(default_factory=list)


@dataclass(slots=True)
class CommandOutcome:
    """How a driver answers a command: `ok` gives a DONE ack, otherwise FAILED with reason."""

    ok: bool
    reason: str | None = None
    result: dict[str, JsonValue] | None = None


class Driver(abc.ABC):
    """Base class of every device driver."""

    kind: DeviceKind
    driver_name: str

    def __init__(self, device: str) -> None:
        self.device = device

    @abc.abstractmethod
    async def run(self, ctx: DriverContext) -> None:
        """Run until cancelled. Raising means the device failed: the runtime restarts it."""

    def snapshot(self) -> DriverSnapshot:
        """Full current state, for births and resyncs. Must be cheap and never raise."""
        return DriverSnapshot()

    def commands(self) -> frozenset[str]:
        """The command names this driver handles (beyond the runtime's own)."""
        return frozenset()

    async def handle_command(self, command: Command) -> CommandOutcome:
        return CommandOutcome(False, f"{self.driver_name} driver has no command {command.name}")

    def metrics(self) -> dict[str, float]:
        """Driver-specific gauges for the heartbeat, e.g. reads_per_s, adverts_per_s."""
        return {}

    def info(self) -> DeviceInfo:
        return DeviceInfo(device=self.device, kind=self.kind, driver=self.driver_name)

    def use_state_dir(self, directory: Path) -> None:
        """Where the driver may keep state that must survive a restart (the outbox's
        directory). Called once, before `run()`; most drivers keep nothing."""
        return

    async def identified(self) -> None:
        """Returns once `info()` knows what the device is (model, firmware), at once for a
        driver with nothing to learn. The runtime waits for it, bounded, before the node's
        first birth, so that birth carries the device inventory."""
        return


class DeviceConfig(BaseModel):
    """One entry of the edge config's `devices:` list."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    kind: DeviceKind
    driver: str = Field(description="registered driver name, e.g. llrp, cu16, bleak, sim-llrp")
    options: dict[str, Any] = Field(default_factory=dict, description="driver-specific")


DriverFactory = Callable[[DeviceConfig], Driver]


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """What the registry needs to know of a driver: the device kind it serves, and the
    factory that validates `options` (with its own pydantic model) and raises ValueError
    naming the bad option. Driver modules expose one per driver name."""

    kind: DeviceKind
    factory: DriverFactory
