"""The order lifecycle for counter and curbside pickups, lists by status, pick lists from
the live RFID state, expiry and cancel, and returns read back in by RFID (real database,
both dialects; RFID through the ingest applier)."""

from __future__ import annotations

from datetime import timedelta

from protocols.messages import ItemEventKind, utc_now
from tests.cloud.cloudproc import SHOPPER_KEY
from tests.inventory.shop import GTIN, OTHER_GTIN, SAFETY, STORE
from tests.orders.conftest import Orders

ARRIVED, DEPARTED = ItemEventKind.ARRIVED, ItemEventKind.DEPARTED


def epc(n: int) -> str:
    return f"3034257BF7194E40000000{n:02X}"


async def test_counter_order_from_placed_to_collected(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=2 + SAFETY)
    order = await orders.place("c-1", (GTIN, 1), method="counter")
    oid = order["order_id"]
    # a counter order is never ready by a locker, and not before it is staged
    assert (await orders.act(oid, "ready", expect=409))["error"] == "illegal_transition"
    assert (await orders.act(oid, "pick"))["status"] == "picking"
    assert (await orders.shop.stock())["reserved"] == 1  # the goods are still on the shelf
    staged = await orders.act(oid, "stage")
    assert (staged["status"], staged["bank"]) == ("staged", None)  # no compartment
    assert (await orders.shop.stock())["reserved"] == 0  # picked: RFID no longer counts them
    ready = await orders.act(oid, "ready")
    assert ready["status"] == "ready"
    assert ready["hold_until"] is not None
    listed = await orders.call("GET", "/api/v1/orders", params={"store": STORE, "status": "ready"})
    assert [o["order_id"] for o in listed] == [oid]
    assert (
        await orders.call("GET", "/api/v1/orders", params={"store": STORE, "status": "placed"})
        == []
    )
    # curbside check-in is for curbside orders only
    assert (await orders.act(oid, "arrived", expect=409))["error"] == "conflict"
    collected = await orders.act(oid, "collect")
    assert collected["status"] == "collected"
    shown = await orders.call("GET", f"/api/v1/orders/{oid}", SHOPPER_KEY)
    assert [t["to"] for t in shown["transitions"]] == [
        "created",
        "picking",
        "staged",
        "ready_for_pickup",
        "collected",
    ]
    assert (await orders.act(oid, "cancel", expect=409))["error"] == "illegal_transition"


async def test_curbside_check_in_and_hand_over(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=1 + SAFETY)
    oid = (await orders.place("cs-1", (GTIN, 1), method="curbside"))["order_id"]
    live = orders.shop.bus.subscribe()
    for action in ("pick", "stage", "ready"):
        await orders.act(oid, action)
    arrived = await orders.call(
        "POST", f"/api/v1/orders/{oid}/arrived", SHOPPER_KEY, json={"note": "bay 3, red car"}
    )
    assert arrived["arrival_note"] == "bay 3, red car"
    assert arrived["arrived_at"] is not None
    causes = []
    while not live._queue.empty():
        change = live._queue.get_nowait()
        if change.kind == "order":
            causes.append(change.data["cause"])
    assert causes[-1] == "arrived"  # staff see the check-in live
    assert (await orders.act(oid, "collect"))["status"] == "collected"


async def test_cancel_releases_the_reservation_and_expiry_ends_a_ready_order(
    orders: Orders,
) -> None:
    await orders.shop.shelves(GTIN=2 + SAFETY)
    first = (await orders.place("x-1", (GTIN, 2), method="counter"))["order_id"]
    assert (await orders.shop.stock())["available"] == 0
    cancelled = await orders.call(
        "POST", f"/api/v1/orders/{first}/cancel", SHOPPER_KEY, json={"reason": "changed my mind"}
    )
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "changed my mind")
    assert (await orders.shop.stock())["available"] == 2
    second = (await orders.place("x-2", (GTIN, 1), method="counter"))["order_id"]
    for action in ("pick", "stage", "ready"):
        await orders.act(second, action)
    extended = await orders.call(
        "POST", f"/api/v1/orders/{second}/extend", SHOPPER_KEY, json={"hours": 24}
    )
    assert orders.shop.lockers is not None
    hold_hours = orders.shop.lockers.options.hold_hours
    assert await orders.shop.lockers.expire_due(utc_now() + timedelta(hours=hold_hours)) == 0
    assert await orders.shop.lockers.expire_due(utc_now() + timedelta(hours=hold_hours + 25)) == 1
    shown = await orders.call("GET", f"/api/v1/orders/{second}")
    assert shown["status"] == "expired"
    assert shown["hold_until"] == extended["hold_until"]
    # a late shopper can still be handed the order before it goes back to the shelf
    assert (await orders.act(second, "collect"))["status"] == "collected"


async def test_pick_list_names_shelves_and_epcs_from_live_rfid(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=1, OTHER_GTIN=2)  # shelf-1: EPCs never seen yet
    await orders.rfid(
        [
            (ARRIVED, epc(1), GTIN, "shelf-2"),
            (ARRIVED, epc(2), GTIN, "shelf-2"),
            (ARRIVED, epc(3), GTIN, "shelf-2"),
            (ARRIVED, epc(4), GTIN, "shelf-3"),
        ],
        # shelf-0: a unit RFID counts but whose EPC the cloud has not seen
        counts=[("shelf-2", GTIN, 3, 3), ("shelf-3", GTIN, 1, 1), ("shelf-0", GTIN, 1, 1)],
    )
    await orders.rfid([(DEPARTED, epc(3), GTIN, None)], counts=[("shelf-2", GTIN, -1, 2)])
    oid = (await orders.place("p-1", (GTIN, 3), (OTHER_GTIN, 1)))["order_id"]
    picks = await orders.call("GET", f"/api/v1/orders/{oid}/pick-list")
    assert picks["order_id"] == oid
    lines = {line["gtin"]: line for line in picks["lines"]}
    # the fullest shelf first, then shelves whose EPCs are known; the departed EPC is gone
    assert [(loc["shelf"], loc["epcs"]) for loc in lines[GTIN]["locations"]] == [
        ("shelf-2", [epc(1), epc(2)]),
        ("shelf-3", [epc(4)]),
    ]
    assert lines[GTIN]["short"] == 0
    # counted by RFID, its EPCs not seen since the cloud started: the shelf, no EPCs
    assert [(loc["shelf"], loc["epcs"]) for loc in lines[OTHER_GTIN]["locations"]] == [
        ("shelf-1", [])
    ]
    # exactly as many EPCs as the line wants
    one = (await orders.place("p-2", (GTIN, 1)))["order_id"]
    picks = await orders.call("GET", f"/api/v1/orders/{one}/pick-list")
    assert [(loc["shelf"], loc["epcs"]) for loc in picks["lines"][0]["locations"]] == [
        ("shelf-2", [epc(1)])
    ]


async def test_returns_are_read_back_in_resellable_to_stock_damaged_not_available(
    orders: Orders,
) -> None:
    await orders.shop.shelves(GTIN=2 + SAFETY)
    oid = (await orders.place("r-1", (GTIN, 2), method="counter"))["order_id"]
    refused = await orders.call(
        "POST", f"/api/v1/orders/{oid}/returns", expect=409, json={"items": [{"epc": epc(1)}]}
    )
    assert "only collected" in refused["detail"]
    for action in ("pick", "stage", "ready", "collect"):
        await orders.act(oid, action)
    # the two units left the shelf with the shopper
    await orders.shop.shelves(GTIN=SAFETY)
    assert (await orders.shop.stock())["available"] == 0
    returned = await orders.call(
        "POST",
        f"/api/v1/orders/{oid}/returns",
        SHOPPER_KEY,
        expect=201,
        json={
            "method": "counter",
            "items": [{"epc": epc(1)}, {"epc": epc(2), "condition": "damaged"}],
        },
    )
    assert [(r["epc"], r["status"]) for r in returned] == [
        (epc(1), "expected"),
        (epc(2), "expected"),
    ]
    too_many = await orders.call(
        "POST", f"/api/v1/orders/{oid}/returns", expect=409, json={"items": [{"epc": epc(3)}]}
    )
    assert "had 2 unit(s); 2 already returned" in too_many["detail"]
    # the counter's reader reads both back in
    await orders.rfid(
        [(ARRIVED, epc(1), GTIN, "counter"), (ARRIVED, epc(2), GTIN, "counter")],
        counts=[("counter", GTIN, 2, 2)],
    )
    shown = await orders.call("GET", f"/api/v1/orders/{oid}")
    assert [(r["epc"], r["status"], r["gtin"]) for r in shown["returns"]] == [
        (epc(1), "received", GTIN),
        (epc(2), "damaged", GTIN),
    ]
    row = await orders.shop.stock()
    # both are on hand; only the resellable one can be sold
    assert (row["on_hand"], row["available"]) == (SAFETY + 2, 1)
    # and an order cannot reserve the damaged one
    assert (await orders.place("r-2", (GTIN, 2), expect=409))["error"] == "insufficient_stock"
    assert (await orders.place("r-3", (GTIN, 1)))["status"] == "reserved"
