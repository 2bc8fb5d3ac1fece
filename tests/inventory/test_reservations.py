"""Orders reserve stock atomically: available = on hand - reserved - safety stock, the same
figure in every route, on SQLite and on a real PostgreSQL. The orders come through the API
(in-process ASGI) and the shelves through the real ingest applier."""

from __future__ import annotations

import asyncio

from tests.inventory.shop import GTIN, OTHER_GTIN, SAFETY, Shop


async def test_100_concurrent_orders_for_10_units_accept_exactly_10(shop: Shop) -> None:
    await shop.shelves(GTIN=10 + SAFETY)
    assert (await shop.stock())["available"] == 10

    responses = await asyncio.gather(*(shop.order((GTIN, 1)) for _ in range(100)))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 10, statuses
    assert statuses.count(409) == 90, statuses
    refused = next(r for r in responses if r.status_code == 409).json()
    assert refused["error"] == "insufficient_stock"
    assert "1 wanted, 0 available" in refused["detail"]
    row = await shop.stock()
    assert (row["on_hand"], row["reserved"], row["available"]) == (11, 10, 0)


async def test_exactly_what_is_available_is_accepted_and_one_more_is_not(shop: Shop) -> None:
    await shop.shelves(GTIN=5 + SAFETY)
    too_many = await shop.order((GTIN, 6))
    assert too_many.status_code == 409, too_many.text
    assert (
        "6 wanted, 5 available (on hand 6, reserved 0, safety stock 1)" in too_many.json()["detail"]
    )
    exact = await shop.order((GTIN, 5))
    assert exact.status_code == 201, exact.text
    assert (await shop.stock())["available"] == 0


async def test_an_order_reserves_all_its_lines_or_none(shop: Shop) -> None:
    await shop.shelves(GTIN=4 + SAFETY, OTHER_GTIN=1 + SAFETY)
    # the same GTIN on two lines counts twice; OTHER_GTIN is short by one
    refused = await shop.order((GTIN, 2), (GTIN, 1), (OTHER_GTIN, 2))
    assert refused.status_code == 409, refused.text
    assert OTHER_GTIN in refused.json()["detail"]
    assert GTIN + ":" not in refused.json()["detail"]
    assert (await shop.stock(GTIN))["reserved"] == 0  # nothing held for the good lines
    accepted = await shop.order((GTIN, 2), (GTIN, 1), (OTHER_GTIN, 1))
    assert accepted.status_code == 201, accepted.text
    assert (await shop.stock(GTIN))["reserved"] == 3
    assert (await shop.stock(OTHER_GTIN))["available"] == 0


async def test_the_reservation_ends_when_the_goods_leave_the_shelves_or_the_order_ends(
    shop: Shop,
) -> None:
    await shop.shelves(GTIN=10 + SAFETY)
    picked = (await shop.order((GTIN, 3))).json()["order_id"]
    cancelled = (await shop.order((GTIN, 2))).json()["order_id"]
    assert (await shop.stock())["reserved"] == 5

    await shop.move(picked, "picking")  # still on the shelves while staff walk to them
    assert (await shop.stock())["reserved"] == 5
    await shop.move(cancelled, "cancelled")
    assert (await shop.stock())["reserved"] == 3

    # staged: the units left the shelves, RFID counts 3 fewer, nothing is counted twice
    await shop.move(picked, "staged")
    await shop.shelves(GTIN=10 + SAFETY - 3)
    row = await shop.stock()
    assert (row["on_hand"], row["reserved"], row["available"]) == (8, 0, 7)

    # a staged order cancelled later gives nothing back twice
    await shop.move(picked, "cancelled")
    assert (await shop.stock())["reserved"] == 0


async def test_a_store_without_rfid_stock_refuses_orders_by_default(shop: Shop) -> None:
    response = await shop.order((GTIN, 1))
    assert response.status_code == 409
    assert "on hand 0" in response.json()["detail"]
