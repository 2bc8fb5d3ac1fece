"""Floor minimums set through the API (SQLite and PostgreSQL, RFID through the real ingest
applier): they win over the config's, a minimum above the floor's count opens a task at
once (at the count: none), 0 switches a config minimum off, ingest batches use them, and
bad input is refused with a reason."""

from __future__ import annotations

from typing import Any

from tests.cloud.streams import STORE, rfid
from tests.inventory.conftest import OPS_KEY, OTHER_STORE, STAFF_KEY, Rig, bearer, make_rig

GTIN_A = "80614141000001"  # in the config, floor-1
GTIN_C = "80614141000025"  # API only
BAD_CHECK_DIGIT = "80614141000002"  # 1 expected
ZONES = {"default": "sales_floor", "shelves": {"back": "backroom"}}
URL = f"/api/v1/stores/{STORE}/floor-minimums"


async def put(rig: Rig, items: list[dict[str, Any]], key: str = STAFF_KEY) -> Any:
    response = await rig.http.put(URL, headers=bearer(key), json={"items": items})
    assert response.status_code == 200, response.text
    return response.json()


async def refused(rig: Rig, items: list[dict[str, Any]]) -> str:
    response = await rig.http.put(URL, headers=bearer(STAFF_KEY), json={"items": items})
    assert response.status_code == 422, response.text
    return response.text


async def open_tasks(rig: Rig) -> list[tuple[str, int, str]]:
    response = await rig.http.get(
        f"/api/v1/stores/{STORE}/tasks?status=open", headers=bearer(OPS_KEY)
    )
    return sorted((t["gtin"], t["quantity"], t["to_shelf"]) for t in response.json())


async def test_api_floor_minimums_win_over_the_config_and_open_tasks(database_url: str) -> None:
    options = {
        "zones": ZONES,
        "floor_minimums": [{"gtin": GTIN_A, "minimum": 2, "shelf": "floor-1"}],
    }
    async for rig in make_rig(database_url, options):
        # 3 on the floor (1 + 2), 5 in the backroom: above the config's 2, no task
        await rig.harness.feed(
            rfid(1, {("floor-1", GTIN_A): 1, ("floor-2", GTIN_A): 2, ("back-1", GTIN_A): 5})
        )
        assert await open_tasks(rig) == []
        shown = (await rig.http.get(URL, headers=bearer(STAFF_KEY))).json()
        assert [(m["gtin"], m["minimum"], m["shelf"], m["source"]) for m in shown] == [
            (GTIN_A, 2, "floor-1", "config")
        ]
        # at the floor's count: still none
        await put(rig, [{"gtin": GTIN_A, "minimum": 3}])
        assert await open_tasks(rig) == []
        # one above: "move 1", to the floor shelf holding the most (no shelf given)
        shown = await put(rig, [{"gtin": GTIN_A, "minimum": 4}])
        assert [(m["minimum"], m["shelf"], m["source"], m["updated_by"]) for m in shown] == [
            (4, None, "api", "staff")
        ]
        assert await open_tasks(rig) == [(GTIN_A, 1, "floor-2")]
        [opened] = [c.data for c in await rig.published() if c.kind == "task"]
        assert (opened["event"], opened["gtin"]) == ("opened", GTIN_A)
        # 0 switches the config's minimum off for this store: the task is done
        await put(rig, [{"gtin": GTIN_A, "minimum": 0}])
        assert await open_tasks(rig) == []
        # a GTIN only the API knows, with its shelf: the ingest batch opens its task
        both = [
            {"gtin": GTIN_A, "minimum": 0},
            {"gtin": GTIN_C, "minimum": 2, "shelf": "floor-9"},
        ]
        await put(rig, both)
        await rig.harness.feed(rfid(2, {("floor-1", GTIN_C): 1, ("back-1", GTIN_C): 4}))
        assert await open_tasks(rig) == [(GTIN_C, 1, "floor-9")]
        # replacing the store's list drops the API's minimums: the config's shows again
        await put(rig, [], key=OPS_KEY)
        shown = (await rig.http.get(URL, headers=bearer(OPS_KEY))).json()
        assert [(m["gtin"], m["source"]) for m in shown] == [(GTIN_A, "config")]


async def test_floor_minimums_refuse_bad_input_and_other_stores(database_url: str) -> None:
    async for rig in make_rig(database_url, {"zones": ZONES}):
        text = await refused(rig, [{"gtin": BAD_CHECK_DIGIT, "minimum": 1}])
        assert "check digit 2, expected 1" in text
        await refused(rig, [{"gtin": "8061414100001", "minimum": 1}])  # 13 digits
        assert "100000" in await refused(rig, [{"gtin": GTIN_A, "minimum": 100_001}])
        await refused(rig, [{"gtin": GTIN_A, "minimum": -1}])
        twice = [{"gtin": GTIN_A, "minimum": 1}, {"gtin": GTIN_A, "minimum": 2}]
        assert "listed twice" in await refused(rig, twice)
        # the bounds themselves are fine
        shown = await put(rig, [{"gtin": GTIN_A, "minimum": 100_000}])
        assert shown[0]["minimum"] == 100_000
        other = await rig.http.put(
            f"/api/v1/stores/{OTHER_STORE}/floor-minimums",
            headers=bearer(STAFF_KEY),
            json={"items": []},
        )
        assert other.status_code == 403
        unknown = await rig.http.get(
            "/api/v1/stores/store-404/floor-minimums", headers=bearer(OPS_KEY)
        )
        assert unknown.status_code == 404
