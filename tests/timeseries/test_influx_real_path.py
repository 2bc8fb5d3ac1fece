"""InfluxDB on the real path: the running cloud writes history to a real InfluxDB 1.x (its
own `/write`, retention policy from deploy/influxdb1/storegate.iql) and the dashboard's
chart reads it back with InfluxQL; on VictoriaMetrics through influxdb-client's v2 API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from cloud.timeseries import (
    InfluxConfig,
    InfluxQLReader,
    QueryError,
    SinkRejected,
    SinkUnavailable,
    quote_literal,
)
from cloud.timeseries.sinks import InfluxV1Sink
from cloud.timeseries.sql import history_table
from cloud.timeseries.stock import stock_level_line
from protocols.messages import Birth, RfidSnapshot, ShelfCount, StreamPosition
from protocols.messages import utc_now as now
from tests.cloud.cloudproc import OPS_KEY, cloud_config
from tests.conftest import REPO_ROOT
from tests.dashboard.edge import (
    GTIN_A,
    GTIN_B,
    NODE,
    READER,
    SHELF_A,
    SHELF_B,
    STORE,
    EdgePublisher,
    count_change,
)
from tests.servers import MosquittoBroker
from tests.timeseries.tsservers import Influxd, VictoriaMetrics

DEPLOY_IQL = REPO_ROOT / "deploy" / "influxdb1" / "storegate.iql"


def apply_deploy_iql(server: Influxd) -> None:
    """What an operator runs once: database, retention policies, continuous queries."""
    server.post("/query", q=DEPLOY_IQL.read_text())


async def _until(
    check: Callable[[], Awaitable[tuple[bool, Any]]], limit_s: float, what: str
) -> Any:
    """Poll `check` (-> (done, what it saw)) until done; on timeout, say what it last saw."""
    seen: Any = None
    try:
        async with asyncio.timeout(limit_s):
            while True:
                done, seen = await check()
                if done:
                    return seen
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"no {what} within {limit_s} s; last seen: {seen!r}") from None


# ---------------------------------------------------------------------- the v1 writer


async def test_v1_sink_writes_to_a_retention_policy_and_rewrites_nothing_twice(
    influxd: Influxd,
) -> None:
    apply_deploy_iql(influxd)
    config = InfluxConfig(url=influxd.url, bucket="storegate/raw", api="v1", timeout_s=5)
    sink, reader = InfluxV1Sink(config), InfluxQLReader.for_config(config)
    at = now().replace(microsecond=0) - timedelta(minutes=5)
    lines = [
        stock_level_line(STORE, f"shelf-{i % 3}", GTIN_A, i, _ns(at) + i, snapshot=False)
        for i in range(30)
    ]
    try:
        await sink.write(lines)
        await sink.write(lines)  # a replay: same series and times, so nothing new
        [series] = await reader.query('SELECT count("count") FROM "stock_level"')
        assert series.values[0][1] == 30
        # ... and into the retention policy the bucket names, not the database's default
        # one only by chance: reading another policy finds nothing.
        assert await reader.query('SELECT * FROM "rollup"."stock_level"') == []
        started = await sink.started_at()
        assert started is not None
        assert started <= now().timestamp()

        with pytest.raises(SinkRejected, match="HTTP 400"):
            await sink.write(["stock_level,store=x count=notanumber 1"])
    finally:
        await sink.close()
        await reader.close()

    missing = InfluxV1Sink(InfluxConfig(url=influxd.url, bucket="nodb", api="v1"))
    try:
        with pytest.raises(SinkUnavailable, match=r"HTTP 404 .*database not found"):
            await missing.write(lines[:1])
    finally:
        await missing.close()


async def test_v1_sink_and_reader_log_in_with_the_user_password_token(
    influxd_with_auth: Influxd,
) -> None:
    server = influxd_with_auth
    # The first user of an auth-enabled InfluxDB 1.x may be created without logging in.
    server.post("/query", q="CREATE USER \"sg\" WITH PASSWORD 's3cr3t-pw' WITH ALL PRIVILEGES")
    good = InfluxConfig(url=server.url, bucket="storegate", token="sg:s3cr3t-pw", api="v1")
    bad = InfluxConfig(url=server.url, bucket="storegate", token="sg:wrong", api="v1")
    admin = InfluxQLReader.for_config(good)
    sink, refused = InfluxV1Sink(good), InfluxV1Sink(bad)
    line = stock_level_line(STORE, SHELF_A, GTIN_A, 4, _ns(now()), snapshot=False)
    try:
        async with httpx.AsyncClient(base_url=server.url, auth=("sg", "s3cr3t-pw")) as http:
            (
                await http.post("/query", params={"q": 'CREATE DATABASE "storegate"'})
            ).raise_for_status()
        with pytest.raises(SinkUnavailable, match="HTTP 401"):  # credentials being fixed
            await refused.write([line])
        await sink.write([line])
        [series] = await admin.query('SELECT "count" FROM "stock_level"')
        assert [row[1] for row in series.values] == [4]
        anonymous = InfluxQLReader(server.url, "storegate")
        try:
            with pytest.raises(QueryError, match="401"):
                await anonymous.query('SELECT "count" FROM "stock_level"')
        finally:
            await anonymous.close()
    finally:
        await sink.close()
        await refused.close()
        await admin.close()


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def test_bucket_and_token_follow_the_1x_conventions() -> None:
    config = InfluxConfig(url="http://x", bucket="db/rp", token="reader:s3cr3t", api="v1")
    assert (config.database, config.retention_policy) == ("db", "rp")
    assert config.credentials == ("reader", "s3cr3t")
    assert "s3cr3t" not in repr(config)
    assert InfluxConfig(url="http://x", bucket="db").retention_policy is None
    for bad in ["", "a/b/c", "/rp"]:
        with pytest.raises(ValueError, match="bucket"):
            InfluxConfig(url="http://x", bucket=bad)
    with pytest.raises(ValueError, match="api"):
        InfluxConfig(url="http://x", bucket="b", api="v3")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the running cloud


@pytest.fixture
async def influx_cloud(
    mosquitto_broker: MosquittoBroker, influxd: Influxd, tmp_path: Path
) -> AsyncIterator[CloudRuntime]:
    apply_deploy_iql(influxd)
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["influxdb"] = {"url": influxd.url, "api": "v1", "bucket": "storegate/raw"}
    config["history"] = {"stock_snapshot_interval_s": 0}  # changes only: exact points
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


def _birth(at: datetime, shelves: dict[tuple[str, str], int]) -> Birth:
    return Birth(
        store=STORE,
        node=NODE,
        seq=0,
        bd_seq=1,
        version="0.4.2",
        event_time=at,
        streams=[StreamPosition(stream=f"rfid/{READER}", seq=0)],
        shelves=[ShelfCount(shelf=s, gtin=g, count=c) for (s, g), c in shelves.items()],
    )


def _snapshot(seq: int, at: datetime, shelves: dict[tuple[str, str], int]) -> RfidSnapshot:
    return RfidSnapshot(
        store=STORE,
        node=NODE,
        seq=seq,
        reader=READER,
        event_time=at,
        shelves=[ShelfCount(shelf=s, gtin=g, count=c) for (s, g), c in shelves.items()],
    )


async def test_stock_levels_reach_influxdb_1x_and_the_chart_reads_them_back(
    influx_cloud: CloudRuntime, mosquitto_broker: MosquittoBroker, influxd: Influxd
) -> None:
    end = now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    born, changed, resynced = (end - timedelta(minutes=m) for m in (30, 4, 2))
    edge = EdgePublisher(mosquitto_broker)
    try:
        edge.send(
            _birth(born, {(SHELF_A, GTIN_A): 12, (SHELF_B, GTIN_A): 5, (SHELF_A, GTIN_B): 3}),
            count_change(1, SHELF_A, GTIN_A, 11, delta=-1, at=changed),
            # A resync of both shelves: GTIN A is no longer on shelf B (its level: 0).
            _snapshot(2, resynced, {(SHELF_A, GTIN_A): 9, (SHELF_B, GTIN_B): 2}),
        )
    finally:
        edge.close()

    reader = InfluxQLReader(influxd.url, "storegate", retention_policy="raw")
    where = f'"store" = {quote_literal(STORE)}'
    query = f'SELECT "count", "snapshot" FROM "stock_level" WHERE {where} GROUP BY "shelf", "gtin"'  # noqa: S608 -- a quoted literal

    async def levels() -> tuple[bool, dict[tuple[str, str], list[tuple[int, int]]]]:
        found = {
            (s.tags["shelf"], s.tags["gtin"]): [(int(str(v[0])), int(str(v[1]))) for v in s.values]
            for s in await reader.query(query)
        }
        return len(found.get((SHELF_A, GTIN_A), [])) == 3, found

    try:
        found = await _until(levels, 20, "three levels of GTIN A on shelf A in InfluxDB")
    finally:
        await reader.close()
    assert found == {
        (SHELF_A, GTIN_A): [(_ns(born), 12), (_ns(changed), 11), (_ns(resynced), 9)],
        (SHELF_B, GTIN_A): [(_ns(born), 5), (_ns(resynced), 0)],
        (SHELF_A, GTIN_B): [(_ns(born), 3), (_ns(resynced), 0)],
        (SHELF_B, GTIN_B): [(_ns(resynced), 2)],
    }

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{influx_cloud.api_port}",
        headers={"Authorization": f"Bearer {OPS_KEY}"},
        timeout=10,
    ) as http:
        params: dict[str, str | int] = {"store": STORE, "gtin": GTIN_A, "minutes": 10}
        response = await http.get("/api/v1/dashboard/history", params={**params, "points": 10})
    assert response.status_code == 200, response.text
    chart = response.json()
    assert chart["every_s"] == 60.0
    times = [datetime.fromisoformat(t) for t in chart["times"]]
    assert len(times) in (10, 11)  # minutes aligned to the epoch: 11 unless on the minute
    assert times[0] > born

    def level(before_change: int, after_change: int, after_resync: int) -> list[int]:
        return [
            before_change if t < changed else after_change if t < resynced else after_resync
            for t in times
        ]

    # The window starts 10 minutes back: the birth's levels (30 minutes back) are its start.
    assert chart["shelves"][SHELF_A] == level(12, 11, 9)
    assert chart["shelves"][SHELF_B] == level(5, 5, 0)
    assert chart["total"] == level(17, 16, 9)

    # It came from InfluxDB: the SQL history table (the fallback sink) holds nothing.
    async with influx_cloud.engine.connect() as connection:
        rows = (await connection.execute(select(func.count()).select_from(history_table))).one()
    assert rows[0] == 0


async def test_periodic_snapshots_write_every_level_again_through_the_v2_api(
    mosquitto_broker: MosquittoBroker, victoria_metrics: VictoriaMetrics, tmp_path: Path
) -> None:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["influxdb"] = {"url": victoria_metrics.url, "bucket": "storegate"}  # api v2
    config["history"] = {"stock_snapshot_interval_s": 0.5, "stock_snapshot_page_rows": 2}
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    try:
        edge = EdgePublisher(mosquitto_broker)
        levels = {(SHELF_A, GTIN_A): 4, (SHELF_A, GTIN_B): 7, (SHELF_B, GTIN_A): 1}
        try:
            edge.send(_birth(now() - timedelta(minutes=1), levels))
        finally:
            edge.close()

        def snapshot_samples() -> dict[tuple[str, str], list[float]]:
            exported = victoria_metrics.export('{__name__="stock_level_count"}')
            flags = victoria_metrics.export('{__name__="stock_level_snapshot"}')
            snapshots: dict[tuple[str, str], set[int]] = {}
            for series in flags:
                tags: Any = series["metric"]
                stamps: Any = series["timestamps"]
                values: Any = series["values"]
                snapshots[(tags["shelf"], tags["gtin"])] = {
                    t for t, v in zip(stamps, values, strict=True) if v == 1
                }
            found = {}
            for series in exported:
                tags, stamps, values = series["metric"], series["timestamps"], series["values"]
                key = (tags["shelf"], tags["gtin"])
                found[key] = [
                    v for t, v in zip(stamps, values, strict=True) if t in snapshots.get(key, set())
                ]
            return found

        async def two_snapshots() -> tuple[bool, dict[tuple[str, str], list[float]]]:
            found = await asyncio.to_thread(snapshot_samples)
            enough = len(found) == 3 and all(len(v) >= 2 for v in found.values())
            return enough, found

        found = await _until(two_snapshots, 20, "two snapshots of every level")
        for key, count in levels.items():
            assert set(found[key]) == {count}, key
        stats = runtime.stock_levels.stats() if runtime.stock_levels else None
        assert stats is not None
        assert stats.snapshots >= 2
        assert stats.snapshot_failures == 0
        assert stats.snapshot_points >= 2 * len(levels)
    finally:
        await runtime.stop()
