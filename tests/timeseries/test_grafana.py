"""The Grafana dashboards (deploy/grafana) and the InfluxDB 1.x rollups (deploy/influxdb1).

Grafana itself is not installed here (AGPL), so the JSON is checked structurally and every
query in it -- panels and template variables -- is run for real, with Grafana's macros
expanded the way Grafana expands them: InfluxQL against a real InfluxDB 1.x holding the
points of every message type, SQL against a real PostgreSQL migrated to the cloud's schema
and holding rows of every table the panels read. Each query must return data.
"""

# Panel queries are InfluxQL and SQL text by nature (S608 is about input spliced into SQL).
# ruff: noqa: S608

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.lockers import tables as lockers
from cloud.offers import tables as offers
from cloud.state import schema
from cloud.state.db import create_engine, migrate
from cloud.timeseries import InfluxConfig, lines_for
from cloud.timeseries.schema import MEASUREMENTS, time_ns
from cloud.timeseries.sinks import InfluxV1Sink
from cloud.timeseries.stock import stock_level_line
from protocols.messages import Message
from tests.conftest import REPO_ROOT
from tests.samples import GTIN, NODE, STORE, T0, all_samples
from tests.timeseries.test_influx_real_path import apply_deploy_iql
from tests.timeseries.tsservers import Influxd, Postgres

DEPLOY = REPO_ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
OTHER_STORE = "store-007"
SHELF = "aisle3-shelf2"  # the sample messages' shelf
STORES = (STORE, OTHER_STORE)
NOW = datetime.now(UTC).replace(microsecond=0)
# The sample messages moved to two hours ago: inside the 30-day raw retention policy.
SHIFT = NOW - timedelta(hours=2) - T0
FROM, TO = NOW - timedelta(hours=6), NOW
HOUR_NS = time_ns(T0 + SHIFT) // 3_600_000_000_000 * 3_600_000_000_000
INTERVAL = "5m"


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def datasource_uids() -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    found = {}
    for path in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            found[source["uid"]] = source["type"]
    return found


def targets(board: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(panel title, datasource uid, target) of every panel query."""
    return [
        (panel["title"], target.get("datasource", panel["datasource"])["uid"], target)
        for panel in board["panels"]
        for target in panel["targets"]
    ]


# ---------------------------------------------------------------------- structure


def test_the_six_dashboards_are_well_formed() -> None:
    boards = dashboards()
    assert set(boards) == {"shelves", "lockers", "orders", "offers", "nodes", "ingest"}
    sources = datasource_uids()
    assert sources == {
        "storegate-influxql": "influxdb",
        "storegate-postgres": "grafana-postgresql-datasource",
    }
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["uid"] == f"storegate-{name}"
        assert board["title"]
        assert board["schemaVersion"] >= 36
        variables = {v["name"]: v for v in board["templating"]["list"]}
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), name
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{name}: {panel['title']!r} overlaps another panel"
            cells |= area
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids) >= 1
        for title, uid, target in targets(board):
            assert uid in sources, f"{name}: {title!r} uses unknown datasource {uid}"
            text = target["query"] if sources[uid] == "influxdb" else target["rawSql"]
            if sources[uid] == "influxdb":
                assert target["rawQuery"] is True
                for measurement in re.findall(r'FROM "([a-z_0-9]+)"', text):
                    assert measurement in MEASUREMENTS, f"{name}: {title!r}: {measurement}"
            else:
                assert target["format"] in {"table", "time_series"}
            used = set(re.findall(r"\$([a-z]+)\b", text)) - {"timeFilter"}
            assert used <= set(variables), f"{name}: {title!r} uses undefined {used}"
        for variable in variables.values():
            assert variable["datasource"]["uid"] in sources


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "storegate.yaml").read_text()
    )
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    # every ${VAR} the datasources interpolate is set for Grafana
    for path in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for name in re.findall(r"\$\{([A-Z_]+)\}", path.read_text()):
            assert name in grafana["environment"], f"{path.name}: {name}"


# ---------------------------------------------------------------------- data


def shifted(message: Message) -> Message:
    """The message with every timestamp moved by SHIFT."""

    def move(value: Any) -> Any:
        if isinstance(value, datetime):
            return value + SHIFT
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    data: dict[str, Any] = move(message.model_dump(mode="python"))
    model: type[BaseModel] = type(message)
    return model.model_validate(data)  # type: ignore[return-value]


async def write_history(influxd: Influxd) -> None:
    """Every message type's points (the real encoder and v1 writer), plus stock levels."""
    apply_deploy_iql(influxd)
    sink = InfluxV1Sink(InfluxConfig(url=influxd.url, bucket="storegate", api="v1"))
    at = HOUR_NS  # four levels 10 minutes apart, in one hour
    levels = [
        stock_level_line(STORE, shelf, GTIN, count, at + i * 600_000_000_000, snapshot=i == 0)
        for i, (shelf, count) in enumerate([(SHELF, 5), (SHELF, 4), ("s2", 2), (SHELF, 6)])
    ]
    try:
        await sink.write([*lines_for([shifted(m) for m in all_samples()]), *levels])
    finally:
        await sink.close()


async def state_database(postgres: Postgres) -> AsyncIterator[AsyncEngine]:
    """A database of its own, migrated to the cloud's schema, with rows in every table the
    panels read."""
    name = f"grafana_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(postgres.url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    engine = create_engine(postgres.url.rsplit("/", 1)[0] + f"/{name}")
    try:
        await migrate(engine)
        async with engine.begin() as db:
            await _state_rows(db)
        yield engine
    finally:
        await engine.dispose()


async def _state_rows(db: Any) -> None:
    ago = NOW - timedelta(hours=1)
    await db.execute(
        schema.stores.insert(), [{"store_id": s, "name": s, "created_at": ago} for s in STORES]
    )
    await db.execute(
        schema.nodes.insert(),
        [{"store_id": STORE, "node_id": NODE, "status": "online", "version": "0.4.2",
          "last_seen": ago, "health_at": ago}],
    )  # fmt: skip
    await db.execute(
        schema.inventory.insert(),
        [{"store_id": STORE, "shelf": f"s{i}", "gtin": GTIN, "node_id": NODE, "count": i,
          "updated_at": ago} for i in range(3)],
    )  # fmt: skip
    await db.execute(
        schema.dead_letters.insert(),
        [{"topic": "storegate/v1/store-042/pi-front/rfid/x", "payload_excerpt": "{",
          "payload_bytes": 1, "reason": reason, "detail": "d", "store_id": STORE,
          "received_at": ago}
         for reason in ("invalid_json", "schema")],
    )  # fmt: skip
    await db.execute(
        schema.commands.insert(),
        [{"correlation_id": uuid.uuid4().hex, "store_id": STORE, "node_id": NODE, "name": "resync",
          "seq": 0, "args": {}, "status": "done", "sent_at": ago, "expires_at": NOW,
          "updated_at": ago}],
    )  # fmt: skip
    await db.execute(
        schema.stream_positions.insert(),
        [{"store_id": STORE, "node_id": NODE, "stream": "rfid/reader-1", "hw": 41,
          "birth_seq": 0, "updated_at": ago}],
    )  # fmt: skip
    await db.execute(
        lockers.orders.insert(),
        [{"order_id": f"o-{i}", "store_id": STORE, "state": state, "items": [], "bank": "b1",
          "compartment": f"c{i}", "hold_until": NOW, "created_at": ago, "updated_at": ago}
         for i, state in enumerate(["ready_for_pickup", "collected"])],
    )  # fmt: skip
    await db.execute(
        lockers.transitions.insert(),
        [{"order_id": "o-0", "store_id": STORE, "from_state": "assigned",
          "to_state": "ready_for_pickup", "cause": "door_closed", "at": ago}],
    )  # fmt: skip
    await db.execute(
        lockers.compartments.insert(),
        [{"store_id": STORE, "bank": "b1", "compartment": f"c{i}", "node_id": NODE,
          "state": state, "door_open": False, "occupied": state == "loaded", "flags": [],
          "updated_at": ago} for i, state in enumerate(["loaded", "empty"])],
    )  # fmt: skip
    await db.execute(
        lockers.alarms.insert(),
        [{"store_id": STORE, "bank": "b1", "compartment": "c0", "kind": "door_forced", "at": ago}],
    )
    await db.execute(
        offers.offers.insert(),
        [{"offer_id": f"of-{i}", "campaign_id": "winter", "store_id": STORE, "zone": "entrance",
          "trigger": "enter", "status": status, "reason": reason,
          "counts_toward_caps": status != "suppressed", "decided_at": ago,
          "delivered_at": ago if status != "suppressed" else None}
         for i, (status, reason) in enumerate([("delivered", None), ("suppressed", "cap")])],
    )  # fmt: skip


# ---------------------------------------------------------------------- Grafana's macros


def influxql(text: str, values: dict[str, list[str]]) -> str:
    """The query Grafana sends to InfluxDB for this dashboard time range and variables."""
    from_ms, to_ms = int(FROM.timestamp() * 1000), int(TO.timestamp() * 1000)
    text = text.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("$__interval", INTERVAL)
    for name, chosen in values.items():  # a multi-value variable in a regex: (a|b)
        alternation = "(" + "|".join(re.escape(v) for v in chosen) + ")"
        text = text.replace(f"${name}", alternation)
    return text


def postgres_sql(text: str, values: dict[str, list[str]]) -> str:
    """The SQL Grafana's PostgreSQL datasource runs for this time range and variables."""
    text = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{FROM.isoformat()}' AND '{TO.isoformat()}'",
        text,
    )

    def group(match: re.Match[str]) -> str:
        seconds = {"1m": 60, "5m": 300, "1h": 3600}[match.group(2)]
        column = match.group(1)
        return f'floor(extract(epoch from {column})/{seconds})*{seconds} AS "time"'

    text = re.sub(r"\$__timeGroupAlias\((\w+), '(\w+)'\)", group, text)
    for name, chosen in values.items():  # a multi-value variable in SQL: 'a','b'
        text = text.replace(f"${name}", ",".join(f"'{v}'" for v in chosen))
    assert "$" not in text, f"unexpanded macro in {text}"
    return text


async def run_influxql(influxd: Influxd, q: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=influxd.url, timeout=10) as http:
        response = await http.get("/query", params={"db": "storegate", "q": q, "epoch": "ms"})
    response.raise_for_status()
    [result] = response.json()["results"]
    assert "error" not in result, f"{q}: {result['error']}"
    return list(result.get("series", []))


async def run_sql(engine: AsyncEngine, q: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(text(q))).all()]


# ---------------------------------------------------------------------- queries, for real


@pytest.fixture
async def state(postgres: Postgres) -> AsyncIterator[AsyncEngine]:
    async for engine in state_database(postgres):
        yield engine


async def test_every_panel_and_variable_query_returns_data(
    influxd: Influxd, state: AsyncEngine
) -> None:
    await write_history(influxd)
    sources = datasource_uids()
    checked = 0
    for name, board in dashboards().items():
        values: dict[str, list[str]] = {}
        for variable in board["templating"]["list"]:  # in order: later ones use earlier
            uid = variable["datasource"]["uid"]
            if sources[uid] == "influxdb":
                series = await run_influxql(influxd, influxql(variable["query"], values))
                chosen = [str(row[-1]) for s in series for row in s["values"]]
            else:
                rows = await run_sql(state, postgres_sql(variable["query"], values))
                chosen = [str(row[0]) for row in rows]
            assert chosen, f"{name}: variable {variable['name']} has no values"
            values[variable["name"]] = chosen
        for title, uid, target in targets(board):
            where = f"{name}: {title!r}"
            if sources[uid] == "influxdb":
                series = await run_influxql(influxd, influxql(target["query"], values))
                points = [v for s in series for row in s["values"] for v in row[1:]]
                assert any(v is not None for v in points), f"{where}: no data"
            else:
                rows = await run_sql(state, postgres_sql(target["rawSql"], values))
                assert rows, f"{where}: no rows"
                if target["format"] == "time_series":  # Grafana needs time, metric, value
                    assert all(len(row) == 3 for row in rows), where
            checked += 1
    assert checked == sum(len(targets(board)) for board in dashboards().values()) >= 24


async def test_the_continuous_queries_roll_real_points_up(influxd: Influxd) -> None:
    await write_history(influxd)
    statements = re.findall(
        r"BEGIN (.+?) END", (DEPLOY / "influxdb1" / "storegate.iql").read_text()
    )
    assert len(statements) == 5
    window = f"time >= {HOUR_NS} AND time < {HOUR_NS + 2 * 3_600_000_000_000}"
    for statement in statements:
        # What the CQ service runs every hour: its own statement, for the hours it covers.
        select, group = statement.split(" GROUP BY ")
        q = f"{select} WHERE {window} GROUP BY {group}"
        async with httpx.AsyncClient(base_url=influxd.url, timeout=10) as http:
            response = await http.post("/query", params={"db": "storegate", "q": q})
        response.raise_for_status()
        [result] = response.json()["results"]
        assert "error" not in result, f"{q}: {result['error']}"
        [[_, written]] = result["series"][0]["values"]
        target = re.search(r'INTO "storegate"\."rollup"\."(\w+)"', statement)
        assert target is not None
        assert written > 0, f"{target.group(1)}: nothing rolled up"
    rollup = await run_influxql(
        influxd,
        'SELECT "count", "min_count", "max_count" FROM "rollup"."stock_level_1h" '
        f"WHERE \"shelf\" = '{SHELF}' AND {window}",
    )
    # SHELF was 5, 4, then 6 in that hour: its last level 6, low 4, high 6.
    assert [row[1:] for row in rollup[0]["values"]] == [[6, 4, 6]]
