"""The LLRP edge driver against the simulated reader over real TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from edge.drivers.base import DeviceConfig, Priority
from edge.drivers.registry import create_driver
from edge.rfid.driver import InventoryOptions, LlrpDriver, LlrpOptions
from edge.rfid.shelf_reader import FLUSH_CHUNK
from protocols.messages import DeviceKind, DriverState, ItemEventKind, Message, RfidEvents
from simulators.drivers.llrp import SimLlrpDriver
from simulators.llrp.reader import SimulatedReader
from simulators.llrp.world import World, WorldConfig

FAST = {"epoch_s": 0.25}  # the simulator's read cycle is shortened to match


class RecordingContext:
    """The runtime's side of the driver interface: validates and records every emit."""

    store = "store-1"
    node = "node-1"

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.states: list[tuple[DriverState, str | None]] = []

    def emit(
        self, message_type: type[Any], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> Any:
        msg = message_type(store=self.store, node=self.node, seq=len(self.messages), **fields)
        self.messages.append(msg)
        return msg

    def set_state(self, state: DriverState, error: str | None = None) -> None:
        self.states.append((state, error))

    def items(self) -> list[tuple[ItemEventKind, str, str | None]]:
        return [
            (item.kind, item.epc, item.shelf)
            for m in self.messages
            if isinstance(m, RfidEvents)
            for item in m.items
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        latest: dict[tuple[str, str], int] = {}
        for m in self.messages:
            if isinstance(m, RfidEvents):
                for c in m.counts:
                    latest[(c.shelf, c.gtin)] = c.count
        return {k: v for k, v in latest.items() if v}


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def truth_counts(world: World) -> dict[tuple[str, str], int]:
    from edge.rfid.epc import decode_epc

    out: dict[tuple[str, str], int] = {}
    for epc, shelf in world.truth().items():
        gtin = decode_epc(epc).gtin
        assert gtin is not None
        out[(shelf, gtin)] = out.get((shelf, gtin), 0) + 1
    return out


@contextlib.asynccontextmanager
async def running(driver: LlrpDriver, ctx: RecordingContext) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(driver.run(ctx))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_driver_follows_ground_truth_through_changes_and_outages() -> None:
    world = World(WorldConfig(antennas=3, items_per_shelf=6, read_rate=0.8, seed=3))
    async with SimulatedReader(world, cycle_s=0.25) as sim:
        options = LlrpOptions(
            port=sim.port,
            antennas=world.shelves(),
            report_interval_s=1.0,
            keepalive_s=1.0,
            backoff_initial_s=0.2,
            presence=FAST,
            inventory=InventoryOptions(cycle_ms=250),
        )
        driver = LlrpDriver("reader-1", options)
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "initial stock")
            assert ctx.states[-1][0] is DriverState.RUNNING
            arrived = [epc for kind, epc, _ in ctx.items() if kind is ItemEventKind.ARRIVED]
            assert sorted(arrived) == sorted(world.items)  # each item arrived exactly once
            assert {epc for _, epc, _ in ctx.items()} == set(world.items)
            assert sum(s.count for s in driver.snapshot().shelves) == 18

            # a shopper takes one item; staff move another
            taken = sorted(world.items)[0]
            moved = next(e for e, a in sorted(world.items.items()) if a == 3)
            world.remove(taken, time.time())
            world.move(moved, 1, time.time())
            await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "removal and move")
            assert (ItemEventKind.DEPARTED, taken, None) in ctx.items()
            assert (ItemEventKind.MOVED, moved, "shelf-1") in ctx.items()

            # the reader drops the connection and an antenna fails: nothing disappears
            events_before = len(ctx.items())
            await sim.drop_connections()
            await wait_for(
                lambda: any(s is DriverState.DEGRADED for s, _ in ctx.states), 10, "degraded"
            )
            await wait_for(driver.connected.is_set, 10, "reconnect")
            await sim.fail_antenna(2)
            await asyncio.sleep(4.0)  # 16 read cycles: far beyond any departure window
            assert len(ctx.items()) == events_before
            assert ctx.counts() == truth_counts(world)
            await sim.restore_antenna(2)
            await asyncio.sleep(1.5)
            assert len(ctx.items()) == events_before
            assert driver.reconnects == 1
            assert driver.metrics()["reads_per_s"] >= 0


async def test_reader_that_refuses_connection_reports_degraded() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        driver = LlrpDriver(
            "reader-x", LlrpOptions(port=port, antennas={1: "s1"}, backoff_initial_s=0.1)
        )
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: len(ctx.states) >= 2, 10, "retries")
    assert all(s is DriverState.DEGRADED for s, _ in ctx.states)
    assert "before greeting" in (ctx.states[0][1] or "")


async def test_sim_llrp_is_a_registered_driver_and_emits_events() -> None:
    import edge.rfid.driver  # noqa: F401  (registers the drivers)

    driver = create_driver(
        DeviceConfig(
            id="sim-reader",
            kind=DeviceKind.RFID_READER,
            driver="sim-llrp",
            options={
                "antennas": 2,
                "items_per_shelf": 4,
                "cycle_s": 0.25,
                "report_interval_s": 1.0,
                "presence": FAST,
            },
        )
    )
    assert isinstance(driver, SimLlrpDriver)
    ctx = RecordingContext()
    async with running(driver, ctx):
        await wait_for(lambda: ctx.counts() == truth_counts(driver.simulator.world), 20, "stock")
    arrived = [epc for kind, epc, _ in ctx.items() if kind is ItemEventKind.ARRIVED]
    assert sorted(arrived) == sorted(driver.simulator.world.items)


def test_bad_options_are_rejected_with_the_option_name() -> None:
    with pytest.raises(ValueError, match="antennas"):
        create_driver(
            DeviceConfig(id="r", kind=DeviceKind.RFID_READER, driver="llrp", options={"port": 5084})
        )


class FailingContext(RecordingContext):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def emit(
        self, message_type: type[Any], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("outbox disk full")
        return super().emit(message_type, priority=priority, **fields)


def test_events_the_runtime_refused_are_sent_first_next_time() -> None:
    driver = LlrpDriver("reader-1", LlrpOptions(antennas={1: "shelf-1"}))
    epc = "3074257BF7194E4000001A85"
    for second in range(6):
        driver.engine.observe(epc, 1, -50.0, second + 0.5)
        driver.engine.tick(second + 1.0)
    ctx = FailingContext(failures=1)
    with pytest.raises(OSError, match="disk full"):
        driver.flush(ctx)
    assert driver.metrics()["unsent_batches"] == 1
    for second in range(6, 20):  # the item is taken meanwhile
        driver.engine.tick(second + 1.0)
    driver.flush(ctx)
    assert [k for k, _, _ in ctx.items()] == [ItemEventKind.ARRIVED, ItemEventKind.DEPARTED]
    assert ctx.counts() == {}
    assert driver.metrics()["unsent_batches"] == 0


async def test_run_raises_the_real_error_for_the_runtime_to_show() -> None:
    world = World(WorldConfig(antennas=1, items_per_shelf=3, read_rate=1.0))
    async with SimulatedReader(world, cycle_s=0.25) as sim:
        driver = LlrpDriver(
            "reader-1",
            LlrpOptions(
                port=sim.port,
                antennas=world.shelves(),
                report_interval_s=1.0,
                presence=FAST,
                inventory=InventoryOptions(cycle_ms=250),
            ),
        )
        with pytest.raises(OSError, match="disk full"):
            await asyncio.wait_for(driver.run(FailingContext(failures=100)), 20)
    assert driver.metrics()["unsent_batches"] == 1  # kept for the restarted run()


def _arrive(driver: LlrpDriver, tags: int) -> None:
    """`tags` distinct items settle on shelf-1 (one GTIN, so count deltas come too)."""
    epcs = [f"3074257BF7194E40{n:08X}" for n in range(tags)]
    for second in range(6):
        for epc in epcs:
            driver.engine.observe(epc, 1, -50.0, second + 0.5)
        driver.engine.tick(second + 1.0)


@pytest.mark.parametrize(
    ("tags", "messages"),
    [(FLUSH_CHUNK - 1, 1), (FLUSH_CHUNK, 1), (FLUSH_CHUNK + 1, 2), (2 * FLUSH_CHUNK + 1, 3)],
)
def test_a_flood_goes_out_chunk_by_chunk_counts_last(tags: int, messages: int) -> None:
    driver = LlrpDriver("reader-1", LlrpOptions(antennas={1: "shelf-1"}))
    _arrive(driver, tags)
    assert driver.engine.pending_events == tags
    ctx = RecordingContext()
    driver.flush(ctx)
    sent = [m for m in ctx.messages if isinstance(m, RfidEvents)]
    assert len(sent) == messages  # each chunk is far below a payload: one message a chunk
    assert all(len(m.items) <= FLUSH_CHUNK for m in sent)
    expected = [f"3074257BF7194E40{n:08X}" for n in range(tags)]
    assert [epc for _, epc, _ in ctx.items()] == expected  # every event once, in order
    assert [bool(m.counts) for m in sent] == [False] * (messages - 1) + [True]
    assert ctx.counts() == {("shelf-1", sent[-1].counts[0].gtin): tags}
    assert driver.engine.pending_events == 0


def test_chunks_not_built_when_the_runtime_refused_are_queued_in_order() -> None:
    driver = LlrpDriver("reader-1", LlrpOptions(antennas={1: "shelf-1"}))
    _arrive(driver, 2 * FLUSH_CHUNK + 1)
    ctx = FailingContext(failures=1)
    with pytest.raises(OSError, match="disk full"):
        driver.flush(ctx)
    assert driver.metrics()["unsent_batches"] == 3  # the refused chunk and the two behind it
    driver.flush(ctx)
    assert len(ctx.items()) == 2 * FLUSH_CHUNK + 1
    assert [epc for _, epc, _ in ctx.items()] == [
        f"3074257BF7194E40{n:08X}" for n in range(2 * FLUSH_CHUNK + 1)
    ]
    sent = [m for m in ctx.messages if isinstance(m, RfidEvents)]
    assert [bool(m.counts) for m in sent] == [False, False, True]
    assert driver.metrics()["unsent_batches"] == 0


def test_a_chunk_size_below_one_is_refused() -> None:
    driver = LlrpDriver("reader-1", LlrpOptions(antennas={1: "shelf-1"}))
    with pytest.raises(ValueError, match="at least 1"):
        driver.engine.drain_event_chunks(0)
