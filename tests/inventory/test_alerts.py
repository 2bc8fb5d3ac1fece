"""Alerts raised and cleared inside the ingest batch, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from cloud.ingest.apply import BatchOutcome
from cloud.inventory.tables import inventory_alerts, planograms, reorder_points
from protocols.messages import (
    CountDelta,
    ItemEvent,
    ItemEventKind,
    Message,
    RfidEvents,
    utc_now,
)
from tests.cloud.streams import NODE, READER, STORE, birth, rfid
from tests.inventory.conftest import Rig, make_rig
from tests.samples import T0

GTIN_A, GTIN_B = "80614141000001", "80614141000002"
EPC = "3074257BF7194E4000001A85"


def alerts(outcome: BatchOutcome) -> list[dict[str, Any]]:
    return [c.data for c in outcome.changes if c.kind == "alert"]


async def rows(rig: Rig) -> list[Any]:
    async with rig.harness.engine.connect() as connection:
        query = sa.select(inventory_alerts).order_by(inventory_alerts.c.id)
        return list((await connection.execute(query)).all())


async def test_low_stock_on_the_store_total_with_hysteresis(database_url: str) -> None:
    async for rig in make_rig(
        database_url, {"hysteresis": 1, "reorder_points": [{"gtin": GTIN_A, "reorder_point": 3}]}
    ):
        feed = rig.harness.feed
        assert alerts(await feed(rfid(1, {("shelf-1", GTIN_A): 3, ("shelf-2", GTIN_A): 2}))) == []
        raised = alerts(await feed(rfid(2, {("shelf-1", GTIN_A): 1})))  # total 3
        assert [
            (a["type"], a["state"], a["shelf"], a["count"], a["reorder_point"]) for a in raised
        ] == [("low_stock", "raised", None, 3, 3)]
        assert raised[0]["details"]["clears_above"] == 4
        assert raised[0]["event"] == "raised"
        # inside the band (4 = point + hysteresis) and further down: nothing new, one open alert
        assert alerts(await feed(rfid(3, {("shelf-1", GTIN_A): 2}))) == []
        assert alerts(await feed(rfid(4, {("shelf-1", GTIN_A): 0}))) == []
        [row] = await rows(rig)
        assert (row.state, row._mapping["count"]) == ("raised", 2)  # count kept current
        cleared = alerts(await feed(rfid(5, {("shelf-1", GTIN_A): 3})))  # total 5 > 4
        assert [(a["id"], a["state"], a["count"]) for a in cleared] == [(row.id, "cleared", 5)]
        # a redelivered batch is a duplicate: no second effect
        assert alerts(await feed(rfid(5, {("shelf-1", GTIN_A): 3}))) == []
        again = alerts(await feed(rfid(6, {("shelf-2", GTIN_A): 0})))  # total 3 again
        assert [a["state"] for a in again] == ["raised"]
        assert again[0]["id"] != row.id
        assert [r.state for r in await rows(rig)] == ["cleared", "raised"]


async def test_misplaced_items_with_epcs_and_a_snapshot_that_empties_the_shelf(
    database_url: str,
) -> None:
    async for rig in make_rig(database_url):
        async with rig.harness.engine.begin() as connection:
            await connection.execute(
                planograms.insert(),
                [
                    {
                        "store_id": STORE,
                        "shelf": "shelf-1",
                        "gtins": [GTIN_A],
                        "updated_at": utc_now(),
                        "updated_by": "test",
                    }
                ],
            )
        arrived = RfidEvents(
            store=STORE,
            node=NODE,
            seq=1,
            reader=READER,
            event_time=T0 + timedelta(seconds=1),
            items=[
                ItemEvent(kind=ItemEventKind.ARRIVED, epc=EPC, gtin=GTIN_B, shelf="shelf-1", at=T0)
            ],
            counts=[
                CountDelta(shelf="shelf-1", gtin=GTIN_B, delta=1, count=1),
                CountDelta(shelf="shelf-1", gtin=GTIN_A, delta=1, count=4),
                CountDelta(shelf="shelf-2", gtin=GTIN_B, delta=1, count=4),  # unplanned shelf
            ],
        )
        [raised] = alerts(await rig.harness.feed(arrived))
        assert (raised["type"], raised["shelf"], raised["gtin"], raised["count"]) == (
            "misplaced",
            "shelf-1",
            GTIN_B,
            1,
        )
        assert raised["details"]["epcs"] == [EPC]
        # a birth replaces the node's shelves: the misplaced item is gone, the alert clears
        # although no count for it is in the batch
        replaced = await rig.harness.feed(birth(1, shelves={("shelf-1", GTIN_A): 4}))
        assert [(a["id"], a["state"], a["count"]) for a in alerts(replaced)] == [
            (raised["id"], "cleared", 0)
        ]


async def test_default_reorder_point_and_per_shelf_points(database_url: str) -> None:
    async for rig in make_rig(
        database_url,
        {
            "default_reorder_point": 0,
            "reorder_points": [{"gtin": GTIN_B, "shelf": "shelf-2", "reorder_point": 2}],
        },
    ):
        outcome = await rig.harness.feed(
            rfid(1, {("shelf-1", GTIN_A): 0, ("shelf-2", GTIN_B): 2, ("shelf-1", GTIN_B): 5})
        )
        got = sorted((a["gtin"], a["shelf"], a["state"]) for a in alerts(outcome))
        # GTIN_A: 0 on hand <= default 0; GTIN_B on shelf-2: 2 <= its shelf point 2
        assert got == [(GTIN_A, None, "raised"), (GTIN_B, "shelf-2", "raised")]


RULE_TABLES = ("reorder_points", "planograms", "inventory_alerts")


async def feed_counting_rule_reads(rig: Rig, *messages: Message) -> tuple[list[Any], int]:
    """The batch's alerts as (store, type, state, shelf, count), and how many SELECTs it
    ran on the inventory domain's tables."""
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and any(
            table in statement for table in RULE_TABLES
        ):
            reads.append(statement)

    engine = rig.harness.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        outcome = await rig.harness.feed(*messages)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    got = [(a["store"], a["type"], a["state"], a["shelf"], a["count"]) for a in alerts(outcome)]
    return got, len(reads)


async def test_a_batch_reads_the_rules_of_all_its_stores_at_once(database_url: str) -> None:
    stores = [f"store-{i:03d}" for i in range(10)]
    low, planned = stores[1], stores[2]  # one store with a reorder point, one with a planogram
    async for rig in make_rig(database_url, {"hysteresis": 1}, stores=stores):
        set_by = {"updated_at": utc_now(), "updated_by": "test"}
        async with rig.harness.engine.begin() as connection:
            point = {"store_id": low, "gtin": GTIN_A, "shelf": "", "reorder_point": 3}
            await connection.execute(reorder_points.insert(), [{**point, **set_by}])
            plan = {"store_id": planned, "shelf": "shelf-1", "gtins": [GTIN_A]}
            await connection.execute(planograms.insert(), [{**plan, **set_by}])

        counts = {("shelf-1", GTIN_A): 2, ("shelf-1", GTIN_B): 1}
        got, reads_of_three = await feed_counting_rule_reads(
            rig, *(rfid(1, counts, store=store) for store in stores[:3])
        )
        assert got == [
            (low, "low_stock", "raised", None, 2),
            (planned, "misplaced", "raised", "shelf-1", 1),
        ]
        counts = {("shelf-1", GTIN_A): 5, ("shelf-1", GTIN_B): 0}
        got, reads_of_ten = await feed_counting_rule_reads(
            rig, *(rfid(2, counts, store=store) for store in stores)
        )
        assert got == [
            (low, "low_stock", "cleared", None, 5),
            (planned, "misplaced", "cleared", "shelf-1", 0),
        ]
        # one read per table for the batch, whatever its number of stores (three reads per
        # store before: 9 and 30)
        assert reads_of_three == reads_of_ten == 3
        # a store whose shelves a birth replaced is evaluated whole, in the same batch
        got, _ = await feed_counting_rule_reads(
            rig,
            birth(1, shelves={("shelf-1", GTIN_B): 2}, store=planned),
            *(
                rfid(3, {("shelf-1", GTIN_A): 1}, store=store)
                for store in stores
                if store != planned
            ),
        )
        assert got == [
            (low, "low_stock", "raised", None, 1),
            (planned, "misplaced", "raised", "shelf-1", 2),
        ]
