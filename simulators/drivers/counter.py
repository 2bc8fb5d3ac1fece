"""`sim-counter`: a simulated RFID reader with deterministic output, for tests and demos.

Every tick it emits one `RfidEvents` message whose count deltas add one item to the next
shelf (round robin), with `count` the shelf's new count. The n-th message of a run is
therefore predictable, which lets tests check exactly-once delivery and per-stream order.
`crash_after` makes `run()` raise after that many messages (each run), and the `sim.crash`
command crashes it on demand: both exercise the supervisor.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.drivers.base import (
    CommandOutcome,
    DeviceConfig,
    Driver,
    DriverContext,
    DriverSnapshot,
    DriverSpec,
    Priority,
)
from protocols.ids import Gtin, Identifier
from protocols.messages import Command, CountDelta, DeviceInfo, DeviceKind, RfidEvents, ShelfCount

DRIVER_NAME = "sim-counter"


class SimCounterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_hz: float = Field(default=5.0, gt=0, le=10_000, description="messages per second")
    shelves: list[Identifier] = Field(default_factory=lambda: ["shelf-1"], min_length=1)
    gtin: Gtin = "80614141123458"
    start_count: int = Field(default=0, ge=0)
    max_messages: int | None = Field(default=None, ge=0, description="stop emitting after")
    crash_after: int | None = Field(default=None, ge=1, description="raise after N per run")
    priority: Literal["sighting", "event", "snapshot"] = "event"


class SimCounterError(RuntimeError):
    """The simulated device failure."""


class SimCounterDriver(Driver):
    kind = DeviceKind.RFID_READER
    driver_name = DRIVER_NAME

    def __init__(self, device: str, options: SimCounterOptions) -> None:
        super().__init__(device)
        self.options = options
        self.rate_hz = options.rate_hz
        self.counts = {shelf: options.start_count for shelf in options.shelves}
        self.emitted = 0
        self._crash_requested = False

    async def run(self, ctx: DriverContext) -> None:
        shelves = self.options.shelves
        priority = Priority[self.options.priority.upper()]
        this_run = 0
        while True:
            if self._crash_requested:
                self._crash_requested = False
                raise SimCounterError("crash requested by command")
            limit = self.options.max_messages
            if limit is None or self.emitted < limit:
                shelf = shelves[self.emitted % len(shelves)]
                # State first, then the event: a birth taken between the two never shows
                # an event whose effect is missing from the snapshot.
                self.counts[shelf] += 1
                self.emitted += 1
                ctx.emit(
                    RfidEvents,
                    priority=priority,
                    reader=self.device,
                    counts=[
                        CountDelta(
                            shelf=shelf, gtin=self.options.gtin, delta=1, count=self.counts[shelf]
                        )
                    ],
                )
                this_run += 1
                if self.options.crash_after is not None and this_run >= self.options.crash_after:
                    raise SimCounterError(f"simulated crash after {this_run} messages")
            await asyncio.sleep(1 / self.rate_hz)

    def snapshot(self) -> DriverSnapshot:
        return DriverSnapshot(
            shelves=[
                ShelfCount(shelf=shelf, gtin=self.options.gtin, count=count)
                for shelf, count in self.counts.items()
            ]
        )

    def commands(self) -> frozenset[str]:
        return frozenset({"sim.crash", "sim.set-rate"})

    async def handle_command(self, command: Command) -> CommandOutcome:
        if command.name == "sim.crash":
            self._crash_requested = True
            return CommandOutcome(True)
        if command.name == "sim.set-rate":
            rate = command.args.get("rate_hz")
            if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
                return CommandOutcome(False, "args.rate_hz must be a number > 0")
            self.rate_hz = float(rate)
            return CommandOutcome(True, result={"rate_hz": self.rate_hz})
        return await super().handle_command(command)

    def metrics(self) -> dict[str, float]:
        return {"emitted": float(self.emitted)}

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            device=self.device, kind=self.kind, driver=self.driver_name, model="simulated"
        )


def _factory(config: DeviceConfig) -> SimCounterDriver:
    try:
        options = SimCounterOptions.model_validate(config.options)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        location = ".".join(str(part) for part in first["loc"]) or "options"
        raise ValueError(f"{location}: {first['msg']}") from None
    return SimCounterDriver(config.id, options)


SIM_COUNTER_DRIVER = DriverSpec(DeviceKind.RFID_READER, _factory)
