"""The time-series server goes away for 60 s under load: nothing lost, memory bounded.

A producer spools points at a steady rate, as the ingestor would, while a real
VictoriaMetrics is stopped for 60 s and started again on the same port and data. The backlog
waits in the spool on disk; the pump keeps retrying with capped backoff, holding one batch
in memory; after the restart every point arrives, counted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud.timeseries import InfluxConfig, InfluxSink, Pump, PumpConfig, Spool, lines_for
from protocols.messages import CountDelta, RfidEvents
from tests.samples import GTIN, NODE, STORE
from tests.timeseries.tsservers import VictoriaMetrics

SHELVES = 40  # points per message
PERIOD_S = 0.02  # -> 2,000 points/s
OUTAGE_S = 60.0
BATCH_LINES = 2_000


@pytest.mark.slow
async def test_sink_down_for_60s_under_load_loses_nothing(
    victoria_metrics: VictoriaMetrics, tmp_path: Path
) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    spool = Spool(tmp_path / "spool.db", capacity_bytes=256 * 1024 * 1024)
    sink = InfluxSink(InfluxConfig(url=victoria_metrics.url, bucket="storegate", timeout_s=2))
    config = PumpConfig(
        batch_lines=BATCH_LINES, max_delay_s=0.2, backoff_initial_s=0.2, backoff_max_s=2.0
    )
    pump = Pump(spool, sink, config)
    produced = 0
    stop_producing = asyncio.Event()

    async def produce() -> None:
        nonlocal produced
        while not stop_producing.is_set():
            message = RfidEvents(
                store=STORE,
                node=NODE,
                seq=produced,
                reader="reader-1",
                event_time=base + timedelta(milliseconds=produced),  # one ms per message
                counts=[
                    CountDelta(shelf=f"shelf-{s}", gtin=GTIN, delta=1, count=produced)
                    for s in range(SHELVES)
                ],
            )
            await spool.append_async(lines_for([message]))  # SpoolFull would fail the test
            produced += 1
            pump.notify()
            await asyncio.sleep(PERIOD_S)

    pump.start()
    producer = asyncio.create_task(produce())
    try:
        await asyncio.sleep(3)
        assert pump.stats().written_lines > 0
        await asyncio.to_thread(victoria_metrics.stop)

        await asyncio.sleep(10)
        stats = pump.stats()
        assert not stats.sink_up
        assert stats.retries >= 3
        assert stats.last_error is not None
        assert "127.0.0.1" in stats.last_error
        await asyncio.sleep(OUTAGE_S - 10)

        backlog = spool.stats()
        assert backlog.lines >= 0.5 * SHELVES * OUTAGE_S / PERIOD_S  # it kept spooling
        assert backlog.oldest_age_s is not None
        assert backlog.oldest_age_s >= OUTAGE_S - 5
        retries = pump.stats().retries
        assert retries <= 2 * OUTAGE_S / config.backoff_max_s + 10  # capped backoff

        tracemalloc.start()
        tracemalloc.reset_peak()
        await asyncio.to_thread(victoria_metrics.start)
        await asyncio.sleep(3)  # writes resume while new points keep coming
        stop_producing.set()
        await producer
        assert await pump.stop(90), "the backlog did not drain"
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        stop_producing.set()
        with contextlib.suppress(Exception):
            await producer
        await pump.stop(1)
        await sink.close()

    # Memory: the pump streams the backlog batch by batch; it never holds it all.
    assert pump.stats().max_batch_lines <= BATCH_LINES
    assert peak < backlog.bytes / 3, f"peak {peak} B while draining {backlog.bytes} B"

    # Exactly every point, once per (series, timestamp).
    series = victoria_metrics.export('{__name__="shelf_count_count"}')
    assert len(series) == SHELVES
    expected = {
        int((base + timedelta(milliseconds=n)).timestamp() * 1000): float(n)
        for n in range(produced)
    }
    for one in series:
        stored = dict(zip(one["timestamps"], one["values"], strict=True))  # type: ignore[call-overload]
        assert stored == expected
    assert pump.stats().written_lines >= produced * SHELVES
    assert spool.stats().lines == 0
