"""The shopper's live stream and lists: only that shopper's offers and orders, opened by a
one-use token that no other token (nor a key) replaces."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx

from cloud.broker.policy import shopper_inbox
from protocols.messages import utc_now
from tests.dashboard.edge import EdgePublisher
from tests.lockers_e2e.rig import GTIN, NODE, OPS_KEY, SHOPPER_KEY, STAFF_KEY, STORE, Rig, bearer
from tests.offers.helpers import presence, reset_seqs

A, B = "shopper-a", "shopper-b"
TOKENS = {A: "000100aa", B: "000100bb"}


async def opt_in(rig: Rig, shopper: str) -> None:
    await rig.call("PUT", f"/api/v1/shoppers/{shopper}", SHOPPER_KEY, json={"consent": True})
    now = utc_now()
    await rig.call(
        "POST",
        f"/api/v1/shoppers/{shopper}/tokens",
        SHOPPER_KEY,
        expect=201,
        json={
            "token": TOKENS[shopper],
            "valid_from": (now - timedelta(minutes=1)).isoformat(),
            "expires_at": (now + timedelta(minutes=15)).isoformat(),
        },
    )


async def order_for(rig: Rig, shopper: str) -> str:
    created = await rig.call(
        "POST",
        f"/api/v1/stores/{STORE}/orders",
        SHOPPER_KEY,
        expect=201,
        json={"items": [{"gtin": GTIN, "quantity": 1}], "shopper": shopper_inbox(shopper)},
    )
    return str(created["order_id"])


async def stream_token(http: httpx.AsyncClient, shopper: str) -> str:
    answer = await http.post(
        "/api/v1/app/session", json={"shopper_id": shopper}, headers=bearer(SHOPPER_KEY)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


async def test_a_shoppers_stream_carries_only_its_own_offers_and_orders(
    rig: Rig, edge: EdgePublisher
) -> None:
    reset_seqs()
    await rig.call(
        "PUT",
        "/api/v1/campaigns/welcome",
        OPS_KEY,
        json={"title": "Welcome", "trigger": "enter", "zones": ["entrance"], "zone_cooldown_s": 0},
    )
    for shopper in (A, B):
        await opt_in(rig, shopper)
    token = await stream_token(rig.http, A)
    seen: list[dict[str, Any]] = []
    async with rig.http.stream("GET", f"/api/v1/app/events?token={token}") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_event() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data:"):
                    event: dict[str, Any] = json.loads(line.removeprefix("data:"))
                    seen.append(event)
                    return event
            raise AssertionError("the stream ended")

        async with asyncio.timeout(15):
            assert (await next_event())["shopper_id"] == A  # hello
            # B's offer and order come first on the bus; A's stream must skip them
            edge.send(presence(("enter", TOKENS[B], "entrance", -60.0, utc_now()), node=NODE))
            await rig.eventually(
                lambda: rig.call("GET", f"/api/v1/app/shoppers/{B}/offers", SHOPPER_KEY),
                lambda offers: len(offers) == 1,
                "B's offer",
            )
            b_order = await order_for(rig, B)
            edge.send(presence(("enter", TOKENS[A], "entrance", -60.0, utc_now()), node=NODE))
            offer = await next_event()
            assert offer["kind"] == "offer"
            assert offer["data"]["title"] == "Welcome"
            a_order = await order_for(rig, A)
            order = await next_event()
            assert (order["kind"], order["data"]["order_id"]) == ("order", a_order)
            assert order["data"]["items"][0]["product"]["name"] == "Linen shirt"
    assert b_order not in json.dumps(seen)
    assert [e["kind"] for e in seen] == ["hello", "offer", "order"]

    # the lists are scoped the same way
    a_orders = await rig.call("GET", f"/api/v1/app/shoppers/{A}/orders", SHOPPER_KEY)
    assert [o["order_id"] for o in a_orders] == [a_order]
    a_offers = await rig.call("GET", f"/api/v1/app/shoppers/{A}/offers", SHOPPER_KEY)
    assert [o["offer_id"] for o in a_offers] == [offer["data"]["offer_id"]]
    # the store's lists, for ops and the store's staff
    store_orders = await rig.call("GET", f"/api/v1/dashboard/orders?store={STORE}", STAFF_KEY)
    assert {o["order_id"] for o in store_orders} == {a_order, b_order}
    store_offers = await rig.call("GET", f"/api/v1/dashboard/offers?store={STORE}", STAFF_KEY)
    assert len(store_offers) == 2


async def test_the_stream_opens_once_per_token_and_with_no_other_credential(rig: Rig) -> None:
    token = await stream_token(rig.http, A)
    async with rig.http.stream("GET", f"/api/v1/app/events?token={token}") as first:
        assert first.status_code == 200
    again = await rig.http.get(f"/api/v1/app/events?token={token}")
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]
    # a dashboard token is signed with another key: it opens nothing here
    dashboard = (await rig.http.post("/api/v1/dashboard/session", headers=bearer(OPS_KEY))).json()
    forged = await rig.http.get(f"/api/v1/app/events?token={dashboard['token']}")
    assert forged.status_code == 401
    # nor does a key, and staff may not open a shopper's stream at all
    keyed = await rig.http.get("/api/v1/app/events", headers=bearer(SHOPPER_KEY))
    assert keyed.status_code == 401
    staff = await rig.http.post(
        "/api/v1/app/session", json={"shopper_id": A}, headers=bearer(STAFF_KEY)
    )
    assert staff.status_code == 403
    unknown = await rig.call("GET", f"/api/v1/app/shoppers/{A}", SHOPPER_KEY)
    assert (unknown["known"], unknown["consent"]) == (False, False)
