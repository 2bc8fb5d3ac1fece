"""Supervision in-process: backoff bounds, and a driver that raises never escapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.drivers.base import DeviceConfig, Driver, DriverContext
from edge.outbox import Outbox
from edge.supervisor import DriverSupervisor, backoff_delay
from protocols.messages import DeviceKind, DriverState, RfidEvents


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (30, 60.0)]:
        delays = [backoff_delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays))
        assert len(set(delays)) > 1  # jittered


class Flaky(Driver):
    kind = DeviceKind.RFID_READER
    driver_name = "flaky"

    def __init__(self) -> None:
        super().__init__("flaky-1")
        self.runs = 0

    async def run(self, ctx: DriverContext) -> None:
        self.runs += 1
        ctx.emit(RfidEvents, reader=self.device)
        if self.runs < 3:
            raise OSError("reader unplugged")
        await asyncio.Event().wait()


async def test_a_failing_driver_is_restarted_and_its_stream_stays_gap_free(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.db", max_bytes=1 << 20, max_age_s=60)
    driver = Flaky()
    supervisor = DriverSupervisor(
        DeviceConfig(id="flaky-1", kind=DeviceKind.RFID_READER, driver="flaky"),
        driver,
        store="s1",
        node="n1",
        outbox=outbox,
        on_emit=lambda: None,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    supervisor.start()
    for _ in range(100):
        if driver.runs == 3 and supervisor.state is DriverState.RUNNING:
            break
        await asyncio.sleep(0.02)
    assert (driver.runs, supervisor.restarts) == (3, 2)
    assert supervisor.last_error == "OSError: reader unplugged"
    health = supervisor.health()
    assert (health.restarts, health.state) == (2, DriverState.RUNNING)
    await supervisor.stop()
    assert supervisor.state is DriverState.STOPPED
    assert [p.seq for p in outbox.pending(0, 10)] == [1, 2, 3]
    outbox.close()
