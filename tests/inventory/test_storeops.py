"""Store operations on SQLite and PostgreSQL, through the real ingest applier and the API:
floor/backroom split, replenishment tasks (floor minimum - 1 / minimum / + 1, an empty
backroom), sales and exits (sold vs unsold), reorder suggestions, accuracy against book
stock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.ingest.apply import BatchOutcome
from cloud.inventory.reorder import Demand, suggest
from cloud.inventory.stock import levels
from protocols.messages import ItemEvent, ItemEventKind, RfidEvents
from tests.cloud.streams import NODE, READER, STORE, rfid
from tests.inventory.conftest import OPS_KEY, OTHER_STORE, STAFF_KEY, Rig, bearer, make_rig
from tests.samples import T0

GTIN_A, GTIN_B = "80614141000001", "80614141000002"
EPC_SOLD, EPC_UNSOLD, EPC_GONE = (f"3074257BF7194E40000{n:05X}" for n in (1, 2, 3))
ZONES = {"default": "sales_floor", "shelves": {"back": "backroom", "door": "exit"}}
MINIMUM = 4


def changes(outcome: BatchOutcome, kind: str) -> list[dict[str, Any]]:
    return [c.data for c in outcome.changes if c.kind == kind]


async def tasks(rig: Rig, status: str | None = None) -> list[dict[str, Any]]:
    query = "" if status is None else f"?status={status}"
    response = await rig.http.get(f"/api/v1/stores/{STORE}/tasks{query}", headers=bearer(OPS_KEY))
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


async def test_replenishment_tasks_at_the_floor_minimum(database_url: str) -> None:
    options = {
        "zones": ZONES,
        "floor_minimums": [{"gtin": GTIN_A, "minimum": MINIMUM, "shelf": "floor-1"}],
    }
    async for rig in make_rig(database_url, options):
        feed = rig.harness.feed
        # minimum + 1 and minimum on the floor: no task
        out = await feed(rfid(1, {("floor-1", GTIN_A): MINIMUM + 1, ("back-1", GTIN_A): 5}))
        assert changes(out, "task") == []
        assert changes(await feed(rfid(2, {("floor-1", GTIN_A): MINIMUM})), "task") == []
        # the model shows the split on every route
        response = await rig.http.get(f"/api/v1/availability/{GTIN_A}", headers=bearer(OPS_KEY))
        [level] = response.json()["stores"]
        assert level["on_hand"] == MINIMUM + 5
        assert level["on_hand_by_zone"] == {"sales_floor": MINIMUM, "backroom": 5}
        response = await rig.http.get(
            "/api/v1/feeds/local-inventory?format=jsonl", headers=bearer(OPS_KEY)
        )
        assert '"on_hand_by_zone": {"backroom": 5, "sales_floor": 4}' in response.text
        # minimum - 1: "move 1 from the backroom to floor-1"
        [opened] = changes(await feed(rfid(3, {("floor-1", GTIN_A): MINIMUM - 1})), "task")
        assert opened["event"] == "opened"
        assert {k: opened[k] for k in ("kind", "gtin", "quantity", "from_zone", "to_shelf")} == {
            "kind": "replenish",
            "gtin": GTIN_A,
            "quantity": 1,
            "from_zone": "backroom",
            "to_shelf": "floor-1",
        }
        # further down: the same task, its quantity kept current, nothing announced
        assert changes(await feed(rfid(4, {("floor-1", GTIN_A): 1})), "task") == []
        [task] = await tasks(rig, "open")
        assert (task["id"], task["quantity"], task["status"]) == (opened["id"], 3, "open")
        # staff carry 3 out: RFID sees the floor back at the minimum and closes it
        out = await feed(rfid(5, {("floor-1", GTIN_A): MINIMUM, ("back-1", GTIN_A): 2}))
        [done] = changes(out, "task")
        assert (done["id"], done["status"], done["closed_by"]) == (opened["id"], "done", "rfid")
        assert await tasks(rig, "open") == []
        # short on the floor with an empty backroom: nothing to move, no task
        out = await feed(rfid(6, {("back-1", GTIN_A): 0, ("floor-1", GTIN_A): MINIMUM - 3}))
        assert changes(out, "task") == []
        # the backroom gets one: a task for that one (3 short, 1 to move)
        [again] = changes(await feed(rfid(7, {("back-1", GTIN_A): 1})), "task")
        assert again["quantity"] == 1
        # closed by hand (idempotent), another store's key sees no such task
        url = f"/api/v1/tasks/{again['id']}/done"
        first = await rig.http.post(url, headers=bearer(STAFF_KEY))
        assert (first.json()["status"], first.json()["closed_by"]) == ("done", "staff")
        second = await rig.http.post(url, headers=bearer(STAFF_KEY))
        assert second.json() == first.json()
        # a GTIN without a floor minimum never gets a task
        out = await feed(rfid(8, {("floor-1", GTIN_B): 0, ("back-1", GTIN_B): 9}))
        assert changes(out, "task") == []


def events(seq: int, *items: tuple[ItemEventKind, str, str | None]) -> RfidEvents:
    return RfidEvents(
        store=STORE,
        node=NODE,
        seq=seq,
        reader=READER,
        event_time=T0 + timedelta(seconds=seq),
        items=[
            ItemEvent(kind=kind, epc=epc, gtin=GTIN_A, shelf=shelf, at=T0)
            for kind, epc, shelf in items
        ],
    )


async def test_an_unsold_item_at_the_exit_raises_a_loss_prevention_alert(
    database_url: str,
) -> None:
    async for rig in make_rig(database_url, {"zones": ZONES}):
        sale = {
            "sale_id": "receipt-1",
            "items": [{"epc": EPC_SOLD, "gtin": GTIN_A, "price": "19.99", "currency": "EUR"}],
        }
        url = f"/api/v1/stores/{STORE}/sales"
        response = await rig.http.post(url, headers=bearer(STAFF_KEY), json=sale)
        assert response.json()["marked"] == 1, response.text
        resent = await rig.http.post(url, headers=bearer(STAFF_KEY), json=sale)
        assert (resent.json()["marked"], resent.json()["already_sold"]) == (0, 1)
        other = await rig.http.post(
            f"/api/v1/stores/{OTHER_STORE}/sales", headers=bearer(STAFF_KEY), json=sale
        )
        assert other.status_code == 403
        # both pass the door: only the unsold one raises, valued at the GTIN's last sale
        out = await rig.harness.feed(
            events(
                1,
                (ItemEventKind.MOVED, EPC_SOLD, "door-1"),
                (ItemEventKind.ARRIVED, EPC_UNSOLD, "door-1"),
                (ItemEventKind.MOVED, EPC_GONE, "floor-1"),
            )
        )
        [alert] = changes(out, "alert")
        assert (alert["type"], alert["state"], alert["shelf"]) == (
            "exit_unsold",
            "raised",
            "door-1",
        )
        assert alert["details"]["epc"] == EPC_UNSOLD
        assert (alert["details"]["value"], alert["details"]["currency"]) == (19.99, "EUR")
        # seen again at the door: the open alert stands, no second one
        again = await rig.harness.feed(events(2, (ItemEventKind.MOVED, EPC_UNSOLD, "door-1")))
        assert changes(again, "alert") == []
        # count changes re-evaluate the shelf alerts; they leave the exit alert alone
        await rig.harness.feed(rfid(3, {("door-1", GTIN_A): 0}))
        response = await rig.http.get(
            "/api/v1/alerts?type=exit_unsold&state=raised", headers=bearer(OPS_KEY)
        )
        assert [a["id"] for a in response.json()["items"]] == [alert["id"]]
        # the item leaves the store unseen: a departure, no alert
        gone = await rig.harness.feed(events(4, (ItemEventKind.LEFT_STORE, EPC_GONE, None)))
        assert changes(gone, "alert") == []
        await rig.harness.feed(events(5, (ItemEventKind.LEFT_STORE, EPC_GONE, None)))  # again
        # the POS synced late: the sale clears the alert
        late = {"sale_id": "receipt-2", "items": [{"epc": EPC_UNSOLD, "gtin": GTIN_A}]}
        cleared = await rig.http.post(url, headers=bearer(STAFF_KEY), json=late)
        assert cleared.json()["cleared_exit_alerts"] == 1
        [change] = [c.data for c in await rig.published() if c.kind == "alert"]
        assert (change["id"], change["state"]) == (alert["id"], "cleared")
        # demand seen by the reorder suggestions: 2 sold, 1 departed unsold (EPC_GONE, once); the
        # sold ones that passed the door (EPC_UNSOLD twice, then sold) are not counted again
        response = await rig.http.get(
            f"/api/v1/stores/{STORE}/reorder-suggestions", headers=bearer(OPS_KEY)
        )
        [item] = [i for i in response.json()["items"] if i["gtin"] == GTIN_A]
        reasoning = item["reasoning"]
        assert (reasoning["units_sold"], reasoning["units_departed_unsold"]) == (2, 1)


@pytest.mark.parametrize(("on_hand", "reorder"), [(3, True), (4, True), (5, False)])
async def test_reorder_suggestion_at_the_reorder_point(
    database_url: str, on_hand: int, reorder: bool
) -> None:
    # 8 sold over a 4-day window: 2 a day; lead time 2 days, z = 0: reorder point 4
    options = {"reorder": {"window_days": 4, "lead_time_days": 2, "service_z": 0, "review_days": 1}}
    async for rig in make_rig(database_url, options):
        now = datetime.now(UTC)
        for day in range(4):
            sale = {
                "sale_id": f"r-{day}",
                "at": (now - timedelta(days=day, hours=12)).isoformat(),
                "items": [
                    {"epc": f"3074257BF7194E4000{day:02X}{n:04X}", "gtin": GTIN_A} for n in range(2)
                ],
            }
            response = await rig.http.post(
                f"/api/v1/stores/{STORE}/sales", headers=bearer(OPS_KEY), json=sale
            )
            assert response.status_code == 200, response.text
        await rig.harness.feed(rfid(1, {("floor-1", GTIN_A): on_hand}))
        response = await rig.http.get(
            f"/api/v1/stores/{STORE}/reorder-suggestions", headers=bearer(OPS_KEY)
        )
        [item] = response.json()["items"]
        why = item["reasoning"]
        assert (why["daily_demand"], why["reorder_point"], why["position"]) == (2.0, 4, on_hand)
        assert item["reorder"] is reorder
        # order up to 4 + 2 a day x 1 review day = 6
        assert item["quantity"] == (6 - on_hand if reorder else 0)


def test_safety_stock_from_the_spread_of_daily_demand() -> None:
    # mean 2, population sd 2; lead time 4 days, z 1: SS = 1 * 2 * sqrt(4) = 4, ROP = 8 + 4
    out = suggest(Demand(8, 0, [0, 4, 0, 4]), 12, 0, 4, 1.0, 7)
    why = out["reasoning"]
    assert (why["daily_std"], why["safety_stock"], why["reorder_point"]) == (2.0, 4.0, 12)
    assert out["reorder"] is True
    assert out["quantity"] == 12 + 14 - 12
    assert suggest(Demand(8, 0, [0, 4, 0, 4]), 13, 0, 4, 1.0, 7)["reorder"] is False
    assert suggest(Demand(0, 0, [0, 0]), 0, 0, 4, 1.0, 7)["reorder"] is False  # no demand


async def test_accuracy_against_book_stock_and_the_approved_export(database_url: str) -> None:
    async for rig in make_rig(database_url, {"zones": ZONES}):
        gtin_c = "80614141000003"
        await rig.harness.feed(
            rfid(1, {("floor-1", GTIN_A): 5, ("back-1", GTIN_A): 1, ("floor-2", GTIN_B): 3})
        )
        url = f"/api/v1/stores/{STORE}/book-stock"
        bad = await rig.http.put(
            url,
            headers={**bearer(STAFF_KEY), "Content-Type": "text/csv"},
            content=f"gtin,quantity,category\n{GTIN_A},6,tops\n123,2,tops\n{GTIN_B},-1,tops\n",
        )
        assert bad.status_code == 422
        assert "line 3" in bad.text
        assert "line 4" in bad.text
        csv_body = f"gtin,quantity,category\n{GTIN_A},6,tops\n{GTIN_B},4,tops\n{gtin_c},2,shoes\n"
        response = await rig.http.put(
            url, headers={**bearer(STAFF_KEY), "Content-Type": "text/csv"}, content=csv_body
        )
        assert response.json()["gtins"] == 3, response.text
        report = (
            await rig.http.get(f"/api/v1/stores/{STORE}/accuracy", headers=bearer(STAFF_KEY))
        ).json()
        # A: 6 = 6 (floor and backroom), B: 3 vs 4, C: 0 vs 2
        assert report["total"]["gtins"] == 3
        assert report["total"]["exact"] == 1
        assert report["total"]["unit_accuracy"] == round(1 - 3 / 12, 4)
        categories = {c["category"]: c for c in report["categories"]}
        assert categories["tops"]["item_accuracy"] == 0.5
        assert categories["shoes"]["unit_accuracy"] == 0.0
        assert [(d["gtin"], d["difference"]) for d in report["differences"]] == [
            (GTIN_B, -1),
            (gtin_c, -2),
        ]
        approve = f"/api/v1/stores/{STORE}/accuracy/approve"
        refused = await rig.http.post(approve, headers=bearer(STAFF_KEY), json={"gtins": [GTIN_A]})
        assert refused.status_code == 422  # no difference to approve
        ok = await rig.http.post(approve, headers=bearer(STAFF_KEY), json={"gtins": [GTIN_B]})
        assert ok.status_code == 200, ok.text
        export = await rig.http.get(
            f"/api/v1/stores/{STORE}/accuracy/approved.csv", headers=bearer(STAFF_KEY)
        )
        lines = export.text.splitlines()
        assert (
            lines[0] == "id,store,gtin,category,rfid_count,book,difference,approved_at,approved_by"
        )
        assert [line.split(",")[2:7] for line in lines[1:]] == [[GTIN_B, "tops", "3", "4", "-1"]]
        # JSON import replaces the book
        json_import = {"items": [{"gtin": GTIN_A, "quantity": 6}]}
        response = await rig.http.put(url, headers=bearer(OPS_KEY), json=json_import)
        assert response.json()["gtins"] == 1
        report = (
            await rig.http.get(f"/api/v1/stores/{STORE}/accuracy", headers=bearer(OPS_KEY))
        ).json()
        assert {c["category"] for c in report["categories"]} == {"(none)", "(not in book)"}


async def test_zone_of_a_shelf_in_sql_matches_the_config(database_url: str) -> None:
    zones = {
        "default": "sales_floor",
        "shelves": {"back": "backroom", "back-9": "sales_floor", "door_1": "exit"},
        "stores": {STORE: {"back-2": "exit"}},
    }
    shelves = [
        "back-1-a1",
        "back-9-a2",
        "back-2-a1",
        "back",
        "backroom-a1",
        "door_1-a1",
        "doorX1-a1",
    ]
    expected = {
        "back-1-a1": "backroom",  # by its reader
        "back-9-a2": "sales_floor",  # the longer (more specific) entry wins
        "back-2-a1": "exit",  # the store's own entry wins
        "back": "backroom",  # the id itself
        "backroom-a1": "sales_floor",  # a prefix only up to a "-"
        "door_1-a1": "exit",
        "doorX1-a1": "sales_floor",  # "_" is a character, not LIKE's wildcard
    }
    async for rig in make_rig(database_url, {"zones": zones}):
        assert {s: rig.domain.options.zones.zone_of(STORE, s) for s in shelves} == expected
        counts = {(shelf, f"{80614141000010 + i:014d}"): 1 for i, shelf in enumerate(shelves)}
        await rig.harness.feed(rfid(1, counts))
        async with rig.harness.engine.connect() as connection:
            found = await levels(connection, lambda _s: 0, zones=rig.domain.options.zones)
        by_shelf = {shelf: found[(STORE, gtin)].by_zone for (shelf, gtin) in counts}
        assert by_shelf == {shelf: {zone: 1} for shelf, zone in expected.items()}
