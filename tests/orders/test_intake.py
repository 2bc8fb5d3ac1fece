"""Order intake from the online channel: idempotent on the external id, reserved in the
order's transaction (on SQLite and PostgreSQL), and the signed webhook form of it."""

from __future__ import annotations

import asyncio
import json

import httpx

from cloud.signing import SIGNATURE_HEADER, signature
from tests.cloud.cloudproc import SHOPPER_KEY
from tests.inventory.shop import GTIN, OTHER_GTIN, SAFETY, STORE
from tests.orders.conftest import Orders


async def test_the_same_request_is_the_same_order_a_different_one_is_409(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=3 + SAFETY)
    first = await orders.place("shop-1001", (GTIN, 2), method="counter", contact="c-77")
    assert first["status"] == "reserved"
    assert (first["method"], first["contact"], first["external_id"]) == (
        "counter",
        "c-77",
        "shop-1001",
    )
    again = await orders.place("shop-1001", (GTIN, 2), expect=200, method="counter", contact="c-77")
    assert again["order_id"] == first["order_id"]
    assert (await orders.shop.stock())["reserved"] == 2  # reserved once

    changed = await orders.place(
        "shop-1001", (GTIN, 1), expect=409, method="counter", contact="c-77"
    )
    assert changed["error"] == "conflict"
    assert f"already placed as order {first['order_id']}" in changed["detail"]
    assert (await orders.shop.stock())["reserved"] == 2

    short = await orders.place("shop-1002", (GTIN, 2), expect=409)
    assert short["error"] == "insufficient_stock"
    assert "2 wanted, 1 available" in short["detail"]
    # the refused order left nothing behind: its id can be placed once stock allows
    assert (await orders.place("shop-1002", (GTIN, 1)))["status"] == "reserved"


async def test_concurrent_retries_of_one_order_place_it_once(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=5 + SAFETY)
    body = {"external_id": "shop-2001", "store": STORE, "lines": [{"gtin": GTIN, "quantity": 1}]}
    responses = await asyncio.gather(
        *(
            orders.http.post(
                "/api/v1/orders", json=body, headers={"Authorization": f"Bearer {SHOPPER_KEY}"}
            )
            for _ in range(10)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert (await orders.shop.stock())["reserved"] == 1


async def test_100_concurrent_orders_for_10_units_accept_exactly_10(orders: Orders) -> None:
    await orders.shop.shelves(GTIN=10 + SAFETY)
    results = await asyncio.gather(
        *(
            orders.http.post(
                "/api/v1/orders",
                json={"external_id": f"web-{n}", "store": STORE, "lines": [{"gtin": GTIN}]},
                headers={"Authorization": f"Bearer {SHOPPER_KEY}"},
            )
            for n in range(100)
        )
    )
    statuses = [r.status_code for r in results]
    assert (statuses.count(201), statuses.count(409)) == (10, 90), statuses
    row = await orders.shop.stock()
    assert (row["on_hand"], row["reserved"], row["available"]) == (11, 10, 0)


def webhook_body(order_id: int | str, quantity: int = 1) -> bytes:
    return json.dumps(
        {
            "id": order_id,
            "name": "#1001",
            "currency": "EUR",  # ignored, as are prices and addresses
            "line_items": [
                {"barcode": GTIN, "quantity": quantity, "price": "19.90"},
                {"barcode": OTHER_GTIN, "quantity": 1},
            ],
            "pickup": {"location": STORE, "method": "curbside"},
            "customer": {"contact_token": "tok-9"},
        }
    ).encode()


async def test_the_webhook_needs_its_signature_and_maps_to_the_same_intake(
    orders: Orders,
) -> None:
    await orders.shop.shelves(GTIN=2 + SAFETY, OTHER_GTIN=1 + SAFETY)
    body = webhook_body(450789469)

    async def deliver(raw: bytes, sign: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if sign is not None:
            headers[SIGNATURE_HEADER] = sign
        return await orders.http.post("/api/v1/webhooks/orders", content=raw, headers=headers)

    assert (await deliver(body, None)).status_code == 401
    assert (await deliver(body, signature("not-the-secret", body))).status_code == 401
    # a signature of another body (a replayed header on a changed body) is refused
    assert (await deliver(body, signature(orders.secret, webhook_body(1)))).status_code == 401

    placed = await deliver(body, signature(orders.secret, body))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["external_id"], order["method"], order["contact"]) == (
        "450789469",
        "curbside",
        "tok-9",
    )
    assert order["items"] == [{"gtin": GTIN, "quantity": 1}, {"gtin": OTHER_GTIN, "quantity": 1}]
    redelivered = await deliver(body, signature(orders.secret, body))
    assert redelivered.status_code == 200
    assert redelivered.json()["order_id"] == order["order_id"]
    updated = webhook_body(450789469, quantity=2)
    refused = await deliver(updated, signature(orders.secret, updated))
    assert refused.status_code == 409
    garbage = b'{"id": 5}'
    bad = await deliver(garbage, signature(orders.secret, garbage))
    assert bad.status_code == 422
    assert "not an order webhook" in bad.json()["detail"]
