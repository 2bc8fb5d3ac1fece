"""Shared pieces of the locker tests: a recording DriverContext and a running sim driver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from edge.drivers.base import DeviceConfig, Priority
from edge.locker.driver import LockerDriver, create_cu16
from protocols.messages import CompartmentEvent, DeviceKind, DriverState, Message
from simulators.drivers.cu16 import SimLockerDriver, create_sim_cu16

KEY_ENV = "STOREGATE_TEST_LOCKER_KEY"
TEST_KEY_HEX = "8f" * 16 + "11" * 16  # 256 bits, test only


@dataclass
class RecordingContext:
    """Our own DriverContext interface, recording instead of persisting: no uplink at all."""

    store: str = "store-1"
    node: str = "node-1"
    messages: list[Message] = field(default_factory=list)
    states: list[tuple[DriverState, str | None]] = field(default_factory=list)

    def emit(
        self, message_type: type[Any], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> Any:
        message = message_type(
            store=self.store, node=self.node, seq=len(self.messages) + 1, **fields
        )
        self.messages.append(message)
        return message

    def set_state(self, state: DriverState, error: str | None = None) -> None:
        self.states.append((state, error))

    def events(self, compartment: str | None = None) -> list[CompartmentEvent]:
        found = [e for m in self.messages for e in getattr(m, "events", [])]
        return [e for e in found if compartment is None or e.compartment == compartment]

    def causes(self, compartment: str) -> list[str]:
        return [e.cause for e in self.events(compartment)]


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(driver: LockerDriver, ctx: RecordingContext) -> AsyncIterator[LockerDriver]:
    task = asyncio.create_task(driver.run(ctx))
    try:
        await asyncio.wait_for(driver.ready.wait(), 15)
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sim_driver(**options: Any) -> SimLockerDriver:
    config = DeviceConfig(
        id="bank-1",
        kind=DeviceKind.LOCKER_BANK,
        driver="sim-cu16",
        options={
            "codes_key_env": KEY_ENV,
            "locks_per_board": 4,
            "poll_interval_s": 0.2,
            "request_timeout_s": 0.2,
            "retries": 1,
            **options,
        },
    )
    return create_sim_cu16(config)


def cu16_driver(transport: str, **options: Any) -> LockerDriver:
    config = DeviceConfig(
        id="bank-1",
        kind=DeviceKind.LOCKER_BANK,
        driver="cu16",
        options={
            "transport": transport,
            "codes_key_env": KEY_ENV,
            "locks_per_board": 4,
            "poll_interval_s": 0.2,
            "request_timeout_s": 0.2,
            "retries": 1,
            **options,
        },
    )
    return create_cu16(config)


@pytest.fixture(autouse=True)
def _locker_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY_HEX)
