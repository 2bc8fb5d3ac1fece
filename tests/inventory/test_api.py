"""The inventory routes (through ASGI, on SQLite and PostgreSQL): roles, JSON errors,
reorder points and planograms that re-evaluate alerts, alert paging and acknowledgement,
bulk availability with a safety stock."""

from __future__ import annotations

from tests.cloud.streams import STORE, rfid
from tests.inventory.conftest import OPS_KEY, OTHER_STORE, SHOPPER_KEY, STAFF_KEY, Rig, bearer

GTIN_A, GTIN_B, GTIN_C = "80614141000001", "80614141000002", "80614141000003"
OPS, STAFF, SHOP = bearer(OPS_KEY), bearer(STAFF_KEY), bearer(SHOPPER_KEY)


async def test_roles_and_errors(rig: Rig) -> None:
    http = rig.http
    path = f"/api/v1/stores/{STORE}/reorder-points/{GTIN_A}"
    assert (await http.put(path, json={"reorder_point": 2})).status_code == 401
    denied = await http.put(path, json={"reorder_point": 2}, headers=SHOP)
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    other = f"/api/v1/stores/{OTHER_STORE}/reorder-points/{GTIN_A}"
    assert (await http.put(other, json={"reorder_point": 2}, headers=STAFF)).status_code == 403
    assert (await http.put(path, json={"reorder_point": 2}, headers=STAFF)).status_code == 200
    unknown = await http.get("/api/v1/stores/nope/planogram", headers=OPS)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"
    bad = await http.put(
        f"/api/v1/stores/{STORE}/planogram", json={"shelves": {"shelf-1": ["12"]}}, headers=OPS
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_request"
    assert "shelves.shelf-1.0" in bad.json()["detail"]
    negative = await http.put(path, json={"reorder_point": -1}, headers=OPS)
    assert negative.status_code == 422
    missing = await http.delete(f"/api/v1/stores/{STORE}/reorder-points/{GTIN_B}", headers=OPS)
    assert missing.status_code == 404


async def test_reorder_points_raise_clear_page_and_acknowledge(rig: Rig) -> None:
    http = rig.http
    await rig.harness.feed(rfid(1, {("shelf-1", GTIN_A): 2, ("shelf-2", GTIN_B): 5}))
    base = f"/api/v1/stores/{STORE}/reorder-points"
    # setting a point above what is on hand raises at once, announced on the live bus
    assert (await http.put(f"{base}/{GTIN_A}", json={"reorder_point": 2}, headers=OPS)).is_success
    [change] = await rig.published()
    assert (change.kind, change.data["type"], change.data["state"], change.data["count"]) == (
        "alert",
        "low_stock",
        "raised",
        2,
    )
    bulk = await http.put(
        base,
        json={
            "items": [
                {"gtin": GTIN_A, "reorder_point": 2},
                {"gtin": GTIN_B, "reorder_point": 5, "shelf": "shelf-2"},
            ]
        },
        headers=STAFF,
    )
    assert sorted((p["gtin"], p["shelf"], p["source"]) for p in bulk.json()) == [
        (GTIN_A, None, "api"),
        (GTIN_B, "shelf-2", "api"),
    ]
    assert [c.data["shelf"] for c in await rig.published()] == ["shelf-2"]  # only the new one
    page = (await http.get("/api/v1/alerts?state=raised&limit=1", headers=OPS)).json()
    assert len(page["items"]) == 1
    assert page["next_before"] is not None
    older = await http.get(f"/api/v1/alerts?limit=1&before={page['next_before']}", headers=STAFF)
    assert [a["type"] for a in older.json()["items"]] == ["low_stock"]
    first = older.json()["items"][0]["id"]
    acked = await http.post(f"/api/v1/alerts/{first}/ack", headers=STAFF)
    assert acked.json()["acknowledged_by"] == "staff"
    assert acked.json()["state"] == "raised"
    [ack_change] = await rig.published()
    assert (ack_change.data["event"], ack_change.data["state"]) == ("acknowledged", "raised")
    again = await http.post(f"/api/v1/alerts/{first}/ack", headers=OPS)
    assert again.json()["acknowledged_by"] == "staff"  # the first acknowledgement stays
    assert await rig.published() == []  # a repeated acknowledgement announces nothing
    assert (await http.post(f"/api/v1/alerts/{first}/ack", headers=SHOP)).status_code == 403
    # deleting the point clears its alert; the other stays
    deleted = await http.delete(f"{base}/{GTIN_A}", headers=OPS)
    assert deleted.status_code == 204
    assert [(c.data["id"], c.data["state"]) for c in await rig.published()][-1] == (
        first,
        "cleared",
    )
    open_now = (await http.get(f"/api/v1/alerts?store={STORE}&state=raised", headers=OPS)).json()
    assert [a["shelf"] for a in open_now["items"]] == ["shelf-2"]
    assert (await http.get(f"/api/v1/alerts?store={OTHER_STORE}", headers=STAFF)).status_code == 403


async def test_planogram_bulk_upload_and_a_change_that_allows_the_item(rig: Rig) -> None:
    http = rig.http
    await rig.harness.feed(rfid(1, {("shelf-1", GTIN_A): 3, ("shelf-1", GTIN_C): 1}))
    put = await http.put(
        f"/api/v1/stores/{STORE}/planogram",
        json={"shelves": {"shelf-1": [GTIN_A, GTIN_A], "shelf-9": []}},
        headers=OPS,
    )
    assert put.json() == {"store": STORE, "shelves": {"shelf-1": [GTIN_A], "shelf-9": []}}
    [raised] = await rig.published()
    assert (raised.data["type"], raised.data["gtin"], raised.data["details"]["planned_on"]) == (
        "misplaced",
        GTIN_C,
        [],
    )
    allow = await http.put(
        f"/api/v1/stores/{STORE}/planogram/shelf-1", json={"gtins": [GTIN_A, GTIN_C]}, headers=STAFF
    )
    assert allow.json()["shelves"]["shelf-1"] == [GTIN_A, GTIN_C]
    [cleared] = await rig.published()
    assert (cleared.data["id"], cleared.data["state"]) == (raised.data["id"], "cleared")
    alert = (await http.get(f"/api/v1/alerts/{raised.data['id']}", headers=OPS)).json()
    assert alert["state"] == "cleared"
    assert alert["cleared_at"] is not None


async def test_bulk_availability_keeps_a_safety_stock(rig: Rig) -> None:
    http = rig.http
    await rig.harness.feed(
        rfid(1, {("shelf-1", GTIN_A): 3, ("shelf-2", GTIN_A): 2, ("shelf-1", GTIN_B): 1})
    )
    await rig.harness.feed(rfid(1, {("shelf-4", GTIN_A): 1}, store=OTHER_STORE))
    body = (
        await http.get(f"/api/v1/availability?gtins={GTIN_A},{GTIN_B},{GTIN_C}", headers=SHOP)
    ).json()
    by_gtin = {item["gtin"]: item for item in body["items"]}
    assert [(s["store"], s["on_hand"], s["available"]) for s in by_gtin[GTIN_A]["stores"]] == [
        (OTHER_STORE, 1, 0),  # the last unit is not sold online
        (STORE, 5, 4),
    ]
    assert by_gtin[GTIN_A]["available"] == 4
    assert by_gtin[GTIN_B]["available"] == 0
    assert by_gtin[GTIN_C]["stores"] == []
    staff = (await http.get(f"/api/v1/availability?gtins={GTIN_A}", headers=STAFF)).json()
    assert [s["store"] for s in staff["items"][0]["stores"]] == [STORE]
    only = await http.get(f"/api/v1/availability?gtins={GTIN_A}&stores={STORE}", headers=SHOP)
    assert [s["store"] for s in only.json()["items"][0]["stores"]] == [STORE]
    bad = await http.get("/api/v1/availability?gtins=123", headers=SHOP)
    assert bad.status_code == 422
    assert "not a GTIN-14" in bad.json()["detail"]
    too_many = ",".join(f"{80614141000000 + i:014d}" for i in range(101))
    assert (
        await http.get(f"/api/v1/availability?gtins={too_many}", headers=SHOP)
    ).status_code == 422


async def test_single_and_bulk_availability_agree(rig: Rig) -> None:
    """One definition of "available": `/availability/{gtin}` is exactly the bulk item."""
    http = rig.http
    await rig.harness.feed(rfid(1, {("shelf-1", GTIN_A): 3, ("shelf-2", GTIN_A): 2}))
    await rig.harness.feed(
        rfid(1, {("shelf-4", GTIN_A): 1, ("shelf-4", GTIN_B): 4}, store=OTHER_STORE)
    )
    for headers in (SHOP, STAFF, OPS):
        bulk = (
            await http.get(
                f"/api/v1/availability?gtins={GTIN_A},{GTIN_B},{GTIN_C}", headers=headers
            )
        ).json()
        for item in bulk["items"]:
            single = (
                await http.get(f"/api/v1/availability/{item['gtin']}", headers=headers)
            ).json()
            assert single == item
    one = (await http.get(f"/api/v1/availability/{GTIN_A}", headers=SHOP)).json()
    assert [(s["store"], s["on_hand"], s["shelves"], s["available"]) for s in one["stores"]] == [
        (OTHER_STORE, 1, 1, 0),
        (STORE, 5, 2, 4),
    ]
    assert one["available"] == 4
    assert all(s["updated_at"].endswith("Z") for s in one["stores"])
