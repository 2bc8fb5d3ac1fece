"""Picked EPCs (real database, both dialects; RFID through the ingest applier): staff stage
an order with the EPCs they scanned, each checked; a collected order's EPCs are sold (an
exit read raises nothing), those of a cancelled or expired order are not (it raises
`exit_unsold`), a return read back in is unsold again; pick lists name each shelf's zone.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.inventory.tables import sold_items
from protocols.messages import ItemEventKind, utc_now
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY
from tests.inventory.shop import GTIN, OTHER_GTIN, STORE, open_shop
from tests.orders.conftest import SECRET_ENV, Orders

ARRIVED, MOVED = ItemEventKind.ARRIVED, ItemEventKind.MOVED
ZONES = {"default": "sales_floor", "shelves": {"back": "backroom", "door": "exit"}}
FLOOR, BACK, DOOR = "floor-1", "back-1", "door-1"


def epc(n: int) -> str:
    return f"3034257BF7194E40000001{n:02X}"


@pytest.fixture
async def orders(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Orders]:
    secret = secrets.token_hex(16)
    monkeypatch.setenv(SECRET_ENV, secret)
    async for shop in open_shop(
        database_url,
        tmp_path,
        monkeypatch,
        inventory_options={"zones": ZONES},
        lockers_options={"intake_webhook_secret_env": SECRET_ENV},
    ):
        yield Orders(shop, secret)


async def stock_up(orders: Orders) -> None:
    """GTIN: 1 on the floor (EPC 1), 3 in the backroom (EPCs 2-4); OTHER_GTIN: EPC 9."""
    await orders.rfid(
        [
            (ARRIVED, epc(1), GTIN, FLOOR),
            (ARRIVED, epc(2), GTIN, BACK),
            (ARRIVED, epc(3), GTIN, BACK),
            (ARRIVED, epc(4), GTIN, BACK),
            (ARRIVED, epc(9), OTHER_GTIN, FLOOR),
        ],
        counts=[(FLOOR, GTIN, 1, 1), (BACK, GTIN, 3, 3), (FLOOR, OTHER_GTIN, 1, 1)],
    )


async def exit_alerts(orders: Orders) -> list[str]:
    """The EPCs of the store's raised `exit_unsold` alerts."""
    page = await orders.call(
        "GET",
        "/api/v1/alerts",
        OPS_KEY,
        params={"store": STORE, "type": "exit_unsold", "state": "raised"},
    )
    return sorted(a["details"]["epc"] for a in page["items"])


async def through_the_door(orders: Orders, *numbers: int) -> None:
    await orders.rfid([(MOVED, epc(n), GTIN, DOOR) for n in numbers])


async def sold(orders: Orders) -> list[tuple[str, str, str]]:
    s = sold_items
    async with orders.shop.harness.engine.connect() as connection:
        rows = await connection.execute(
            select(s.c.epc, s.c.source, s.c.sale_id).where(s.c.store_id == STORE).order_by(s.c.epc)
        )
        return [(r.epc, r.source, r.sale_id) for r in rows]


async def staged(orders: Orders, external_id: str, quantity: int, epcs: list[str]) -> str:
    oid: str = (await orders.place(external_id, (GTIN, quantity), method="counter"))["order_id"]
    await orders.act(oid, "pick")
    shown = await orders.act(oid, "stage", epcs=epcs)
    assert shown["picked"]["recorded"] is True
    assert [e["epc"] for e in shown["picked"]["epcs"]] == sorted(epcs)
    return oid


async def test_pick_list_takes_the_sales_floor_first_and_names_zones(orders: Orders) -> None:
    await stock_up(orders)
    oid = (await orders.place("z-1", (GTIN, 2)))["order_id"]
    picks = await orders.call("GET", f"/api/v1/orders/{oid}/pick-list")
    [line] = picks["lines"]
    # the backroom is fuller, but the floor's one unit comes first
    assert [(loc["shelf"], loc["zone"], loc["epcs"]) for loc in line["locations"]] == [
        (FLOOR, "sales_floor", [epc(1)]),
        (BACK, "backroom", [epc(2)]),
    ]
    # one unit: the floor alone
    one = (await orders.place("z-2", (GTIN, 1)))["order_id"]
    picks = await orders.call("GET", f"/api/v1/orders/{one}/pick-list")
    assert [loc["shelf"] for loc in picks["lines"][0]["locations"]] == [FLOOR]


async def test_stage_checks_every_scanned_epc(orders: Orders) -> None:
    await stock_up(orders)
    oid = (await orders.place("s-1", (GTIN, 2), method="counter"))["order_id"]
    await orders.act(oid, "pick")
    refusals = {
        "unknown": ([epc(1), epc(0x77)], "RFID has not seen it in store"),
        "other gtin": ([epc(1), epc(9)], f"is GTIN {OTHER_GTIN}, which the order does not have"),
        "one too many": ([epc(1), epc(2), epc(3)], f"3 EPCs of GTIN {GTIN}, the order has 2"),
    }
    for why, (epcs, reason) in refusals.items():
        refused = await orders.act(oid, "stage", expect=409, epcs=epcs)
        assert refused["error"] == "pick_refused", why
        assert reason in refused["detail"], (why, refused)
        # the stage rolled back with it
        assert (await orders.call("GET", f"/api/v1/orders/{oid}"))["status"] == "picking"
    twice = await orders.act(oid, "stage", expect=409, epcs=[epc(1), epc(1)])
    assert "listed twice" in twice["detail"]
    # sold at the till: not the store's to pick
    sale = {"sale_id": "till-1", "items": [{"epc": epc(4), "gtin": GTIN}]}
    await orders.call("POST", f"/api/v1/stores/{STORE}/sales", json=sale)
    refused = await orders.act(oid, "stage", expect=409, epcs=[epc(4)])
    assert f"EPC {epc(4)} is sold" in refused["detail"]
    # gone for good (unseen in the whole store): not the store's to pick
    await orders.rfid([(ItemEventKind.LEFT_STORE, epc(3), GTIN, None)])
    refused = await orders.act(oid, "stage", expect=409, epcs=[epc(3)])
    assert "RFID has not seen it in store" in refused["detail"]
    # exactly the line's quantity is fine; fewer too (the view says what is short)
    shown = await orders.act(oid, "stage", epcs=[epc(1)])
    assert shown["picked"]["short"] == {GTIN: 1}
    # another open order cannot take the same item
    other = (await orders.place("s-2", (GTIN, 1), method="counter"))["order_id"]
    await orders.act(other, "pick")
    refused = await orders.act(other, "stage", expect=409, epcs=[epc(1)])
    assert f"EPC {epc(1)} is picked for order {oid}" in refused["detail"]


async def test_an_item_the_picker_took_off_its_shelf_can_be_staged(orders: Orders) -> None:
    await stock_up(orders)
    oid = (await orders.place("d-1", (GTIN, 1), method="counter"))["order_id"]
    await orders.act(oid, "pick")
    # the shelf reader saw it go: no longer on a pick list, still in the store
    await orders.rfid([(ItemEventKind.DEPARTED, epc(1), GTIN, None)], counts=[(FLOOR, GTIN, -1, 0)])
    other = (await orders.place("d-2", (GTIN, 1)))["order_id"]
    listed = await orders.call("GET", f"/api/v1/orders/{other}/pick-list")
    assert [e for loc in listed["lines"][0]["locations"] for e in loc["epcs"]] == [epc(2)]
    shown = await orders.act(oid, "stage", epcs=[epc(1)])
    assert [e["epc"] for e in shown["picked"]["epcs"]] == [epc(1)]
    # put down on the floor again: picked for d-1, so still on no other pick list ...
    await orders.rfid([(ARRIVED, epc(1), GTIN, FLOOR)], counts=[(FLOOR, GTIN, 1, 1)])
    listed = await orders.call("GET", f"/api/v1/orders/{other}/pick-list")
    assert [e for loc in listed["lines"][0]["locations"] for e in loc["epcs"]] == [epc(2)]
    # ... until d-1 is cancelled and lets it go
    await orders.act(oid, "cancel")
    listed = await orders.call("GET", f"/api/v1/orders/{other}/pick-list")
    assert listed["lines"][0]["locations"][0]["epcs"] == [epc(1)]


async def test_an_item_that_arrived_and_left_its_shelf_in_one_batch_can_be_staged(
    orders: Orders,
) -> None:
    # the ingest folds a batch's events per EPC: the last (departed) must still leave the
    # row of the shelf it was read on, as one message at a time would
    await stock_up(orders)
    oid = (await orders.place("b-1", (GTIN, 1), method="counter"))["order_id"]
    await orders.act(oid, "pick")
    await orders.rfid(
        [(ARRIVED, epc(5), GTIN, FLOOR), (ItemEventKind.DEPARTED, epc(5), GTIN, None)],
        counts=[(FLOOR, GTIN, 0, 1)],
    )
    listed = await orders.call("GET", f"/api/v1/orders/{oid}/pick-list")
    assert epc(5) not in [e for loc in listed["lines"][0]["locations"] for e in loc["epcs"]]
    shown = await orders.act(oid, "stage", epcs=[epc(5)])
    assert [e["epc"] for e in shown["picked"]["epcs"]] == [epc(5)]


async def test_staged_without_epcs_nothing_is_recorded_and_the_view_says_so(
    orders: Orders,
) -> None:
    await stock_up(orders)
    oid = (await orders.place("n-1", (GTIN, 1), method="counter"))["order_id"]
    picking = await orders.act(oid, "pick")
    assert picking["picked"] == {"recorded": False, "epcs": [], "short": {}, "note": None}
    for action in ("stage", "ready", "collect"):
        shown = await orders.act(oid, action)
    assert shown["picked"]["recorded"] is False
    assert "none will be marked sold" in shown["picked"]["note"]
    full = await orders.call("GET", f"/api/v1/orders/{oid}", SHOPPER_KEY)
    assert full["picked"] == shown["picked"]
    assert await sold(orders) == []


async def test_a_collected_orders_epcs_are_sold_and_leave_without_an_alert(
    orders: Orders,
) -> None:
    await stock_up(orders)
    oid = await staged(orders, "web-1001", 2, [epc(1), epc(2)])
    await orders.act(oid, "ready")
    assert await sold(orders) == []  # not before the hand-over
    await orders.act(oid, "collect")
    assert await sold(orders) == [(epc(1), "order", "web-1001"), (epc(2), "order", "web-1001")]
    await through_the_door(orders, 1, 2)
    assert await exit_alerts(orders) == []


async def test_the_exit_alert_of_an_item_carried_out_before_collect_clears(
    orders: Orders,
) -> None:
    await stock_up(orders)
    oid = await staged(orders, "web-1002", 1, [epc(1)])
    await orders.act(oid, "ready")
    await through_the_door(orders, 1)  # the shopper left before staff pressed collect
    assert await exit_alerts(orders) == [epc(1)]
    live = orders.shop.bus.subscribe()
    await orders.act(oid, "collect")
    assert await exit_alerts(orders) == []
    cleared = []
    while not live._queue.empty():
        change = live._queue.get_nowait()
        if change.kind == "alert":
            cleared.append((change.data["details"]["epc"], change.data["state"]))
    assert cleared == [(epc(1), "cleared")]


@pytest.mark.parametrize("end", ["cancelled", "expired"])
async def test_an_item_of_a_cancelled_or_expired_order_at_the_exit_raises(
    orders: Orders, end: str
) -> None:
    await stock_up(orders)
    oid = await staged(orders, f"web-{end}", 1, [epc(2)])
    if end == "cancelled":
        await orders.act(oid, "cancel")
    else:
        await orders.act(oid, "ready")
        assert orders.shop.lockers is not None
        hours = orders.shop.lockers.options.hold_hours
        assert await orders.shop.lockers.expire_due(utc_now() + timedelta(hours=hours + 1)) == 1
    assert (await orders.call("GET", f"/api/v1/orders/{oid}"))["status"] == end
    assert await sold(orders) == []
    await through_the_door(orders, 2)
    assert await exit_alerts(orders) == [epc(2)]


async def test_a_return_read_back_in_is_unsold_and_alerts_if_carried_out(
    orders: Orders,
) -> None:
    await stock_up(orders)
    oid = await staged(orders, "web-1003", 2, [epc(1), epc(2)])
    for action in ("ready", "collect"):
        await orders.act(oid, action)
    await through_the_door(orders, 1, 2)  # the shopper takes both home
    assert await exit_alerts(orders) == []
    body: dict[str, Any] = {"items": [{"epc": epc(1)}]}
    await orders.call("POST", f"/api/v1/orders/{oid}/returns", SHOPPER_KEY, expect=201, json=body)
    # registered, not yet read back in: still sold
    assert [e for e, _src, _sale in await sold(orders)] == [epc(1), epc(2)]
    await orders.rfid([(ARRIVED, epc(1), GTIN, "counter")], counts=[("counter", GTIN, 1, 1)])
    shown = await orders.call("GET", f"/api/v1/orders/{oid}")
    assert [(r["epc"], r["status"]) for r in shown["returns"]] == [(epc(1), "received")]
    assert [e for e, _src, _sale in await sold(orders)] == [epc(2)]
    # back in stock: out through the door unsold raises; the one kept does not
    await through_the_door(orders, 1, 2)
    assert await exit_alerts(orders) == [epc(1)]
