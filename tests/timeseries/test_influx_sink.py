"""The InfluxDB writer against a real VictoriaMetrics (`/api/v2/write`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloud.timeseries import InfluxConfig, InfluxSink, SinkUnavailable, lines_for
from protocols.messages import CountDelta, RfidEvents
from tests.samples import GTIN, NODE, STORE, all_samples
from tests.servers import free_port
from tests.timeseries.tsservers import VictoriaMetrics


def _recent(seconds_ago: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)


async def test_writer_stores_points_in_victoria_metrics(victoria_metrics: VictoriaMetrics) -> None:
    base = _recent(600)
    messages = [
        RfidEvents(
            store=STORE,
            node=NODE,
            seq=i,
            reader="reader-1",
            event_time=base + timedelta(seconds=i),
            counts=[
                CountDelta(shelf=f"shelf-{s}", gtin=GTIN, delta=1, count=i * 10 + s)
                for s in range(3)
            ],
        )
        for i in range(50)
    ]
    sink = InfluxSink(InfluxConfig(url=victoria_metrics.url, bucket="storegate", org="storegate"))
    try:
        await sink.write(lines_for(messages))
        await sink.write(lines_for(messages))  # a rewrite (redelivery) adds nothing
    finally:
        await sink.close()
    series = victoria_metrics.export('{__name__="shelf_count_count"}')
    assert len(series) == 3
    by_shelf = {s["metric"]["shelf"]: s for s in series}  # type: ignore[index]
    shelf1 = by_shelf["shelf-1"]
    assert shelf1["metric"] == {
        "__name__": "shelf_count_count",
        "store": STORE,
        "shelf": "shelf-1",
        "gtin": GTIN,
    }
    assert shelf1["values"] == [i * 10 + 1 for i in range(50)]
    expected_ms = [int((base + timedelta(seconds=i)).timestamp() * 1000) for i in range(50)]
    assert shelf1["timestamps"] == expected_ms


async def test_every_sample_message_is_accepted(victoria_metrics: VictoriaMetrics) -> None:
    sink = InfluxSink(InfluxConfig(url=victoria_metrics.url, bucket="b"))
    try:
        await sink.write(lines_for(all_samples()))
    finally:
        await sink.close()
    names = {s["metric"]["__name__"] for s in victoria_metrics.export('{store="store-042"}')}  # type: ignore[index]
    # VictoriaMetrics keeps numeric fields as `<measurement>_<field>` (strings are dropped).
    assert {"node_health_cpu_percent", "shelf_count_count", "driver_health_m_reads_per_s"} <= names
    assert "item_event_rssi" in names


async def test_writer_raises_sink_unavailable_when_nothing_listens() -> None:
    sink = InfluxSink(InfluxConfig(url=f"http://127.0.0.1:{free_port()}", bucket="b", timeout_s=2))
    try:
        with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1"):
            await sink.write(["m f=1i 1"])
    finally:
        await sink.close()


def test_config_repr_hides_the_token() -> None:
    config = InfluxConfig(url="http://x", bucket="b", token="s3cr3t")
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in str(config)
