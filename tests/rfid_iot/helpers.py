"""Shared by the IoT reader tests: run a driver as the runtime would, and compare."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from edge.drivers.base import Driver
from tests.rfid.test_driver import RecordingContext, truth_counts, wait_for

__all__ = ["FAST", "RecordingContext", "running", "truth_counts", "wait_for"]

FAST = {"epoch_s": 0.25}  # the simulators' read cycle is shortened to match


@contextlib.asynccontextmanager
async def running(driver: Driver, ctx: RecordingContext) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(driver.run(ctx))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
